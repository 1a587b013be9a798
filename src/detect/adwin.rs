//! ADWIN (ADaptive WINdowing, in its ADWIN2 form with an exponential
//! histogram): a window over the recent stream that shrinks whenever two
//! of its parts have significantly different means.
//!
//! **What.** The detector keeps a window `W` of the most recent values,
//! compressed into *buckets*: row `i` of the histogram holds up to
//! `max_buckets` buckets of `2^i` values each, every bucket summarised by
//! the sum of its values and their variance (sum of squared deviations).
//! A new value enters row 0 as a bucket of its own; when a row overflows
//! (`max_buckets + 1` buckets) its two oldest buckets merge into one bucket
//! of the next row. Every `clock`-th value, once the window holds more than
//! `grace_period` values, the *cut test* runs: for every split of the
//! window at a bucket boundary into an older part `W0` (`n0` values, mean
//! `mu0`) and a newer part `W1` (`n1`, `mu1`), both at least
//! `min_window_length` long, it compares `|mu0 - mu1|` with
//!
//! ```text
//! d       = ln(2 ln(n) / delta)                       (n = |W|)
//! m       = 1 / (n0 - min_window_length + 1) + 1 / (n1 - min_window_length + 1)
//! epsilon = sqrt(2 m sigma^2 d) + 2/3 d m             (sigma^2 = variance of W)
//! ```
//!
//! If a split exceeds `epsilon`, a drift is declared, the oldest bucket is
//! dropped and the test runs again on the shorter window, until no split
//! exceeds its `epsilon`. The drift restarts the detector from scratch on
//! the next value (see below).
//!
//! **Why.** ADWIN needs no window length nor threshold in the signal's
//! units: it adapts the window to the stream (long while it is stationary,
//! short after a change) and bounds its false-alarm rate through a single
//! confidence `delta`. It detects increases and decreases of the mean of
//! any bounded signal (error rates, losses, feature means) with
//! `O(max_buckets · log W)` memory and time per test; `clock` trades the
//! cost of the test for detection delay (the test runs only every `clock`
//! values, so a change typically shows up to `clock - 1` values later than
//! with `clock = 1`).
//!
//! **Reference.** A. Bifet and R. Gavaldà, *Learning from Time-Changing
//! Data with Adaptive Windowing*, Proceedings of the 2007 SIAM
//! International Conference on Data Mining, 443–448. This is a
//! line-for-line port of River 0.26.1's `river.drift.ADWIN`
//! (`river/drift/adwin.py`, a wrapper around the Rust `AdaptiveWindowing`
//! in River's `rust_src/adwin.rs`; River 0.26 no longer has a Cython
//! `adwin_c.pyx`), defaults included, with the floating-point operations
//! in River's order, checked index for index (and window state for
//! window state) against River's detections in `tests/river_adwin.rs`
//! (fixtures written by `scripts/river/adwin.py`).
//!
//! Where River (and so this port) departs from the paper:
//! * the bound has the form of the paper's variance-based `epsilon_cut`
//!   (with `d = ln(2 / delta')`), but with `delta' = delta / ln(n)` where
//!   the paper's analysis takes `delta' = delta / n`, and with `m` (above)
//!   computed from `n0 - min_window_length + 1` and
//!   `n1 - min_window_length + 1` instead of the paper's `1/n0 + 1/n1`
//!   (the inverse of its harmonic mean `m`): a looser bound for short
//!   sub-windows. MOA's `blnCutexpression` ("Formula Gener 2008") has the
//!   same two changes;
//! * the test runs only every `clock` values (32 by default; the paper
//!   tests after every value, `clock = 1`), only after `grace_period`
//!   values, and only on splits whose two parts have at least
//!   `min_window_length` values;
//! * `sigma^2` is the (population) variance of the whole window, kept
//!   with Welford-style updates (bucket merges use the pairwise formula
//!   of Babcock et al. 2003), not a bound on the values' range;
//! * after a cut only the single oldest bucket is dropped before the
//!   window is tested again (the paper drops values from the tail until
//!   no cut holds — the same in the end, one bucket at a time);
//! * the detector then *restarts*: River's Python wrapper discards the
//!   whole helper on the update after a drift (`if self.drift_detected:
//!   self._reset()`), so the shrunk window `W1` the paper keeps is never
//!   used to detect the next change. The next drift can come no sooner
//!   than the `max(clock, grace_period + 1)`-th value after a drift.
//!
//! Departures from River, none of which shows on River's own streams:
//! * **bounded window.** The window never holds more than `max_window`
//!   values (default [`DEFAULT_MAX_WINDOW`] = 2^24): beyond that, the
//!   oldest buckets are dropped (as after a cut, without declaring a
//!   drift). River's window grows without limit on a stationary stream
//!   (its memory grows as `log W`). With the cap the histogram has at most
//!   [`AdwinParams::max_rows`] rows and the detector occupies at most
//!   [`AdwinParams::memory_bound`] bytes (3,712 bytes with the defaults on
//!   x86-64), whatever the stream;
//! * non-finite observations (NaN, ±infinity) are ignored: they would
//!   poison the window's sums until the next drift. River takes them in;
//! * River's update counter (`tick`, an `i32`) is kept modulo `clock`
//!   here, which is the same test schedule without River's overflow after
//!   2^31 values;
//! * parameters River accepts but that make no sense (or panic) are
//!   rejected: see [`AdwinError`].
//!
//! The [`Verdict`]'s `statistic` is `|mu0 - mu1|` of the split closest to
//! (or furthest past) its `epsilon` (largest `|mu0 - mu1| / epsilon`) at
//! the last cut test, `threshold` that split's `epsilon`; on a test,
//! a drift is declared exactly when `statistic > threshold`. Between two
//! tests the verdict repeats the last test's figures; before the first
//! test (or when no split was long enough) the statistic is 0 and the
//! threshold `None`. ADWIN has no warning zone.

use std::mem::size_of;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Detector, Level, Verdict};

/// Default [`AdwinParams::max_window`]: 2^24 = 16,777,216 values (194 days
/// of one value a second), far beyond the windows of River's examples.
pub const DEFAULT_MAX_WINDOW: u64 = 1 << 24;

/// Largest [`AdwinParams::max_window`]: 2^53, where `f64` (River's type for
/// the window's length) stops counting exactly.
pub const MAX_WINDOW_LIMIT: u64 = 1 << 53;

/// Largest [`AdwinParams::max_buckets`] accepted (River sets none).
pub const MAX_BUCKETS_LIMIT: u32 = 4096;

/// Parameters of [`Adwin`]; field names and defaults are River's, plus
/// `max_window`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdwinParams {
    /// Confidence (significance) of the cut test, in `(0, 1)`.
    pub delta: f64,
    /// The cut test runs every `clock` values (1: after every value);
    /// `>= 1`.
    pub clock: u32,
    /// Buckets of each size kept before the two oldest are merged, in
    /// `1..=4096`.
    pub max_buckets: u32,
    /// Shortest sub-window a split may have to be tested; `>= 1`.
    pub min_window_length: u32,
    /// No test until the window holds more than this many values.
    pub grace_period: u32,
    /// Longest window (not in River): older values are dropped beyond it.
    /// In `2 * min_window_length..=2^53`.
    pub max_window: u64,
}

impl Default for AdwinParams {
    /// River's defaults: `delta=0.002, clock=32, max_buckets=5,
    /// min_window_length=5, grace_period=10`; `max_window` 2^24.
    fn default() -> Self {
        AdwinParams {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
            max_window: DEFAULT_MAX_WINDOW,
        }
    }
}

/// Invalid [`AdwinParams`], or an inconsistent serialized [`Adwin`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AdwinError {
    #[error("adwin: delta must be in (0, 1), got {0}")]
    Delta(f64),
    #[error("adwin: clock must be >= 1, got 0")]
    Clock,
    #[error("adwin: max_buckets must be in 1..={MAX_BUCKETS_LIMIT}, got {0}")]
    MaxBuckets(u32),
    #[error("adwin: min_window_length must be >= 1, got 0")]
    MinWindowLength,
    #[error("adwin: max_window must be in 2 * min_window_length..=2^53, got {0}")]
    MaxWindow(u64),
    #[error("adwin: inconsistent state: {0}")]
    State(&'static str),
}

impl AdwinParams {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), AdwinError> {
        if !(self.delta > 0.0 && self.delta < 1.0) {
            return Err(AdwinError::Delta(self.delta));
        }
        if self.clock == 0 {
            return Err(AdwinError::Clock);
        }
        if !(1..=MAX_BUCKETS_LIMIT).contains(&self.max_buckets) {
            return Err(AdwinError::MaxBuckets(self.max_buckets));
        }
        if self.min_window_length == 0 {
            return Err(AdwinError::MinWindowLength);
        }
        let shortest = 2 * u64::from(self.min_window_length);
        if !(shortest..=MAX_WINDOW_LIMIT).contains(&self.max_window) {
            return Err(AdwinError::MaxWindow(self.max_window));
        }
        Ok(())
    }

    /// The most rows the histogram can have: `floor(log2(max_window + 1))
    /// + 1` (25 with the default `max_window`). A bucket of row `i` holds
    /// `2^i` values, and the window holds at most `max_window + 1` values
    /// (between an insertion and the trimming to `max_window`).
    pub fn max_rows(&self) -> usize {
        (u64::BITS - (self.max_window + 1).leading_zeros()) as usize
    }

    /// Bytes an [`Adwin`] with these parameters can occupy at most (see
    /// [`Detector::memory_bytes`]): the struct itself plus, for each of at
    /// most [`Self::max_rows`] rows, its inline `Vec`s and room for
    /// `max_buckets + 1` sums and variances. 3,712 bytes with the defaults
    /// on a 64-bit target (112 for the struct, 144 a row). A bound, not a
    /// forecast: a histogram grown by insertions keeps at least
    /// `max_buckets - 1` buckets in every row below the last, so it reaches
    /// only about `log2(max_window / max_buckets) + 1` rows (22 by default).
    pub fn memory_bound(&self) -> usize {
        let per_row = size_of::<Row>() + 2 * self.row_capacity() * size_of::<f64>();
        size_of::<Adwin>() + self.max_rows() * per_row
    }

    /// Buckets a row holds at most, for an instant (River's
    /// `max_buckets + 1`).
    fn row_capacity(&self) -> usize {
        self.max_buckets as usize + 1
    }
}

/// One row of the exponential histogram: the buckets of `2^i` values, the
/// oldest first, each as the sum of its values and the sum of their
/// squared deviations from their mean (River's `Bucket`, without its
/// zero padding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    totals: Vec<f64>,
    variances: Vec<f64>,
}

impl Row {
    fn new(capacity: usize) -> Self {
        Row {
            totals: Vec::with_capacity(capacity),
            variances: Vec::with_capacity(capacity),
        }
    }

    fn len(&self) -> usize {
        self.totals.len()
    }

    fn is_empty(&self) -> bool {
        self.totals.is_empty()
    }

    /// Appends a bucket (the newest). Never beyond the capacity the row
    /// was built with: rows hold at most `max_buckets + 1` buckets.
    fn push(&mut self, total: f64, variance: f64) {
        self.totals.push(total);
        self.variances.push(variance);
    }

    /// Drops the `n` oldest buckets (River's `Bucket::compress`).
    fn drop_oldest(&mut self, n: usize) {
        let n = n.min(self.len());
        self.totals.drain(..n);
        self.variances.drain(..n);
    }

    fn heap_bytes(&self) -> usize {
        (self.totals.capacity() + self.variances.capacity()) * size_of::<f64>()
    }
}

/// The ADWIN detector (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AdwinState")]
pub struct Adwin {
    params: AdwinParams,
    /// Values in the window (River's `width`, an `f64` as there).
    width: f64,
    /// Their sum (River's `total`).
    total: f64,
    /// Their sum of squared deviations from the window's mean (River's
    /// `variance`, which is not divided by the width).
    variance: f64,
    /// Values since the last restart, modulo `clock` (River's `tick`).
    tick: u32,
    /// The histogram: row `i` holds buckets of `2^i` values; never empty.
    rows: Vec<Row>,
    /// `|mu0 - mu1|` of the most significant split at the last test.
    statistic: f64,
    /// Its `epsilon`; `None` before the first test.
    threshold: Option<f64>,
    /// A drift was declared on the last value: restart on the next one.
    drift_detected: bool,
}

/// [`Adwin`] as serialized, checked on the way in (see `TryFrom`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdwinState {
    params: AdwinParams,
    width: f64,
    total: f64,
    variance: f64,
    tick: u32,
    rows: Vec<Row>,
    statistic: f64,
    threshold: Option<f64>,
    drift_detected: bool,
}

impl TryFrom<AdwinState> for Adwin {
    type Error = AdwinError;

    /// Validates the parameters and the histogram's invariants, so that a
    /// corrupt state cannot make the detector panic or outgrow its memory
    /// bound, and gives every row its exact capacity back.
    fn try_from(s: AdwinState) -> Result<Self, AdwinError> {
        s.params.validate()?;
        let bad = AdwinError::State;
        if s.rows.is_empty() || s.rows.len() > s.params.max_rows() {
            return Err(bad("number of histogram rows"));
        }
        if s.tick >= s.params.clock {
            return Err(bad("tick must be below clock"));
        }
        let capacity = s.params.row_capacity();
        // u128: up to 4096 buckets of 2^53 values would overflow a u64.
        let mut width: u128 = 0;
        let mut rows = Vec::with_capacity(s.rows.len());
        for (i, row) in s.rows.into_iter().enumerate() {
            if row.totals.len() != row.variances.len() || row.len() > capacity - 1 {
                return Err(bad("histogram row length"));
            }
            if row
                .totals
                .iter()
                .chain(&row.variances)
                .any(|v| !v.is_finite())
            {
                return Err(bad("non-finite bucket"));
            }
            width += (row.len() as u128) << i;
            let mut exact = Row::new(capacity);
            exact.totals.extend_from_slice(&row.totals);
            exact.variances.extend_from_slice(&row.variances);
            rows.push(exact);
        }
        if rows.len() > 1 && rows.last().is_some_and(Row::is_empty) {
            return Err(bad("empty last histogram row"));
        }
        if width > u128::from(s.params.max_window) || s.width != width as f64 {
            return Err(bad("width does not match the histogram"));
        }
        let finite = [s.total, s.variance, s.statistic, s.threshold.unwrap_or(0.0)];
        if finite.iter().any(|v| !v.is_finite()) {
            return Err(bad("non-finite sum"));
        }
        Ok(Adwin {
            params: s.params,
            width: s.width,
            total: s.total,
            variance: s.variance,
            tick: s.tick,
            rows,
            statistic: s.statistic,
            threshold: s.threshold,
            drift_detected: s.drift_detected,
        })
    }
}

impl Adwin {
    /// A detector with the given parameters.
    pub fn new(params: AdwinParams) -> Result<Self, AdwinError> {
        params.validate()?;
        Ok(Self::fresh(params))
    }

    /// A fresh detector: an empty window, row 0 allocated.
    fn fresh(params: AdwinParams) -> Self {
        let mut detector = Self::empty(params);
        detector.rows.reserve_exact(1);
        detector.rows.push(Row::new(params.row_capacity()));
        detector
    }

    /// A fresh detector without even row 0 (`fresh` and `reset` add it).
    fn empty(params: AdwinParams) -> Self {
        Adwin {
            params,
            width: 0.0,
            total: 0.0,
            variance: 0.0,
            tick: 0,
            rows: Vec::new(),
            statistic: 0.0,
            threshold: None,
            drift_detected: false,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &AdwinParams {
        &self.params
    }

    /// Whether the last observation was declared a drift (River's
    /// `drift_detected`).
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// Values in the window (River's `width`).
    pub fn width(&self) -> u64 {
        self.width as u64
    }

    /// Sum of the values in the window (River's `total`).
    pub fn total(&self) -> f64 {
        self.total
    }

    /// Sum of the squared deviations of the window's values from their
    /// mean (River's `variance`: not divided by the width).
    pub fn variance(&self) -> f64 {
        self.variance
    }

    /// Mean of the window, 0 if it is empty (River's `estimation`).
    pub fn estimation(&self) -> f64 {
        if self.width == 0.0 {
            0.0
        } else {
            self.total / self.width
        }
    }

    /// Buckets in the histogram.
    pub fn n_buckets(&self) -> usize {
        self.rows.iter().map(Row::len).sum()
    }

    /// River's `insert_element(value, 0.0)`: the value becomes a bucket of
    /// row 0, the window's sums are updated, full rows are merged upwards.
    fn insert(&mut self, value: f64) {
        if self.rows.is_empty() {
            // Never: the histogram always keeps row 0.
            self.rows.push(Row::new(self.params.row_capacity()));
        }
        self.rows[0].push(value, 0.0);

        self.width += 1.0;
        let mut incremental_variance = 0.0;
        if self.width > 1.0 {
            let delta_v = value - self.total / (self.width - 1.0);
            incremental_variance = (self.width - 1.0) * delta_v * delta_v / self.width;
        }
        self.variance += incremental_variance;
        self.total += value;

        self.compress();
    }

    /// River's `compress_buckets`: while a row holds `max_buckets + 1`
    /// buckets, its two oldest merge into a bucket of the next row.
    fn compress(&mut self) {
        let full = self.params.row_capacity();
        let mut idx = 0;
        while idx < self.rows.len() && self.rows[idx].len() == full {
            let n1 = (1u64 << idx) as f64;
            let row = &self.rows[idx];
            let (t0, t1) = (row.totals[0], row.totals[1]);
            let (v0, v1) = (row.variances[0], row.variances[1]);
            let mu1 = t0 / n1;
            let mu2 = t1 / n1;
            let total12 = t0 + t1;
            let temp = n1 * 0.5 * (mu1 - mu2) * (mu1 - mu2);
            let v12 = v0 + v1 + temp;

            if idx + 1 >= self.rows.len() {
                if self.rows.len() == self.rows.capacity() {
                    // One row at a time: the capacity stays within
                    // `max_rows` (see `AdwinParams::memory_bound`).
                    self.rows.reserve_exact(1);
                }
                self.rows.push(Row::new(full));
            }
            self.rows[idx + 1].push(total12, v12);
            self.rows[idx].drop_oldest(2);

            if self.rows[idx + 1].len() < full {
                break;
            }
            idx += 1;
        }
    }

    /// River's `delete_element`: drops the oldest bucket (the first of the
    /// last row) and takes it out of the window's sums.
    fn delete_oldest(&mut self) {
        let last = self.rows.len() - 1;
        let Some((&u, &v)) = self.rows[last]
            .totals
            .first()
            .zip(self.rows[last].variances.first())
        else {
            return; // an empty window
        };
        let n = (1u64 << last) as f64;
        let mu = u / n;

        self.width -= n;
        self.total -= u;
        let mu_window = self.total / self.width;
        let inc = v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.variance -= inc;

        self.rows[last].drop_oldest(1);
        if self.rows[last].is_empty() && last > 0 {
            self.rows.pop();
        }
        if self.width == 0.0 {
            // Only through `max_window` with the window in one bucket
            // (`max_buckets` 1): River's formulas would divide 0 by 0.
            self.total = 0.0;
            self.variance = 0.0;
        }
    }

    /// River's `evaluate_cut`'s bound for a split into `n0` older and `n1`
    /// newer values.
    fn epsilon(&self, n0: f64, n1: f64) -> f64 {
        let min_len = f64::from(self.params.min_window_length);
        let delta_prime = (2.0 * self.width.ln() / self.params.delta).ln();
        let m_recip = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
        (2.0 * m_recip * (self.variance / self.width) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip
    }

    /// River's `detect_change`: every `clock` values past the grace period,
    /// tests every split of the window at a bucket boundary, oldest first;
    /// on a cut drops the oldest bucket and tests again. Returns whether a
    /// cut was found.
    fn detect_change(&mut self) -> bool {
        self.tick = (self.tick + 1) % self.params.clock;
        if self.tick != 0 || self.width <= f64::from(self.params.grace_period) {
            return false;
        }
        let min_len = f64::from(self.params.min_window_length);
        self.statistic = 0.0;
        self.threshold = None;
        let mut best_ratio = f64::NEG_INFINITY;
        let mut first_pass = true;
        let mut change_detected = false;
        loop {
            let mut cut = false;
            let mut n0 = 0.0_f64;
            let mut n1 = self.width;
            let mut u0 = 0.0_f64;
            let mut u1 = self.total;
            'scan: for idx in (0..self.rows.len()).rev() {
                let bucket_size = (1u64 << idx) as f64;
                let row = &self.rows[idx];
                let len = row.len();
                for (k, &total_at) in row.totals.iter().enumerate() {
                    n0 += bucket_size;
                    n1 -= bucket_size;
                    u0 += total_at;
                    u1 -= total_at;

                    // The newest bucket: W1 would be empty.
                    if idx == 0 && k == len - 1 {
                        break 'scan;
                    }

                    let delta_mean = (u0 / n0) - (u1 / n1);
                    if n1 >= min_len && n0 >= min_len {
                        let epsilon = self.epsilon(n0, n1);
                        let gap = delta_mean.abs();
                        if first_pass {
                            let ratio = gap / epsilon;
                            if ratio > best_ratio {
                                best_ratio = ratio;
                                self.statistic = gap;
                                self.threshold = Some(epsilon);
                            }
                        }
                        if gap > epsilon {
                            cut = true;
                            break 'scan;
                        }
                    }
                }
            }
            if !cut {
                break;
            }
            change_detected = true;
            first_pass = false;
            self.delete_oldest();
        }
        change_detected
    }
}

impl Default for Adwin {
    /// River's defaults.
    fn default() -> Self {
        Self::fresh(AdwinParams::default())
    }
}

impl Detector for Adwin {
    fn update(&mut self, x: f64) -> Verdict {
        if !x.is_finite() {
            return Verdict::stable(self.statistic, self.threshold);
        }
        if self.drift_detected {
            self.reset();
        }
        self.insert(x);
        let max_window = self.params.max_window as f64;
        while self.width > max_window {
            self.delete_oldest();
        }
        self.drift_detected = self.detect_change();
        Verdict {
            level: if self.drift_detected {
                Level::Drift
            } else {
                Level::Stable
            },
            statistic: self.statistic,
            threshold: self.threshold,
        }
    }

    fn reset(&mut self) {
        // Keeps the allocations of the row vector and of row 0: they are
        // within the memory bound already.
        let mut rows = std::mem::take(&mut self.rows);
        rows.truncate(1);
        match rows.first_mut() {
            Some(row) => row.drop_oldest(row.len()),
            None => {
                rows.reserve_exact(1);
                rows.push(Row::new(self.params.row_capacity()));
            }
        }
        *self = Adwin {
            rows,
            ..Self::empty(self.params)
        };
    }

    /// The struct, the histogram's row vector and each row's two vectors,
    /// by capacity; at most [`AdwinParams::memory_bound`].
    fn memory_bytes(&self) -> usize {
        size_of::<Self>()
            + self.rows.capacity() * size_of::<Row>()
            + self.rows.iter().map(Row::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;

    /// `n` N(0, 1) values, then N(`delta`, 1) from index `at` on.
    fn gaussian(n: usize, at: usize, delta: f64, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|i| {
                let z: f64 = rng.sample(StandardNormal);
                z + if i >= at { delta } else { 0.0 }
            })
            .collect()
    }

    fn drifts(adwin: &mut Adwin, stream: &[f64]) -> Vec<usize> {
        stream
            .iter()
            .enumerate()
            .filter(|(_, &x)| adwin.update(x).level == Level::Drift)
            .map(|(i, _)| i)
            .collect()
    }

    /// The histogram's invariants: every row holds at most `max_buckets`
    /// buckets at rest, the last row is not empty (unless it is row 0), the
    /// buckets account for the width, the sums match the window's.
    fn assert_consistent(adwin: &Adwin) {
        let m = adwin.params.max_buckets as usize;
        assert!(!adwin.rows.is_empty());
        let mut width = 0u64;
        let mut total = 0.0;
        for (i, row) in adwin.rows.iter().enumerate() {
            assert!(row.len() <= m, "row {i} holds {}", row.len());
            assert_eq!(row.totals.len(), row.variances.len());
            width += (row.len() as u64) << i;
            total += row.totals.iter().sum::<f64>();
        }
        if adwin.rows.len() > 1 {
            assert!(adwin.rows.last().is_some_and(|r| !r.is_empty()));
        }
        assert_eq!(width, adwin.width());
        assert!((total - adwin.total()).abs() <= 1e-6 * (1.0 + total.abs()));
        assert!(adwin.width() <= adwin.params.max_window);
        assert!(adwin.rows.len() <= adwin.params.max_rows());
    }

    #[test]
    fn defaults_are_rivers() {
        let p = AdwinParams::default();
        assert_eq!(p.delta, 0.002);
        assert_eq!(p.clock, 32);
        assert_eq!(p.max_buckets, 5);
        assert_eq!(p.min_window_length, 5);
        assert_eq!(p.grace_period, 10);
        assert_eq!(p.max_window, DEFAULT_MAX_WINDOW);
        assert_eq!(Adwin::default(), Adwin::new(p).unwrap());
    }

    #[test]
    fn rejects_invalid_parameters() {
        let ok = AdwinParams::default();
        for (params, err) in [
            (AdwinParams { delta: 0.0, ..ok }, AdwinError::Delta(0.0)),
            (AdwinParams { delta: 1.0, ..ok }, AdwinError::Delta(1.0)),
            (AdwinParams { delta: -0.1, ..ok }, AdwinError::Delta(-0.1)),
            (AdwinParams { clock: 0, ..ok }, AdwinError::Clock),
            (
                AdwinParams {
                    max_buckets: 0,
                    ..ok
                },
                AdwinError::MaxBuckets(0),
            ),
            (
                AdwinParams {
                    max_buckets: MAX_BUCKETS_LIMIT + 1,
                    ..ok
                },
                AdwinError::MaxBuckets(MAX_BUCKETS_LIMIT + 1),
            ),
            (
                AdwinParams {
                    min_window_length: 0,
                    ..ok
                },
                AdwinError::MinWindowLength,
            ),
            (
                AdwinParams {
                    max_window: 9,
                    ..ok
                },
                AdwinError::MaxWindow(9),
            ),
            (
                AdwinParams {
                    max_window: MAX_WINDOW_LIMIT + 1,
                    ..ok
                },
                AdwinError::MaxWindow(MAX_WINDOW_LIMIT + 1),
            ),
        ] {
            assert_eq!(Adwin::new(params).unwrap_err(), err, "{params:?}");
        }
        assert!(matches!(
            Adwin::new(AdwinParams {
                delta: f64::NAN,
                ..ok
            }),
            Err(AdwinError::Delta(_))
        ));
        // The extremes that are accepted.
        assert!(Adwin::new(AdwinParams {
            clock: 1,
            max_buckets: 1,
            min_window_length: 1,
            grace_period: 0,
            max_window: 2,
            ..ok
        })
        .is_ok());
        assert!(Adwin::new(AdwinParams {
            max_buckets: MAX_BUCKETS_LIMIT,
            max_window: MAX_WINDOW_LIMIT,
            ..ok
        })
        .is_ok());
        assert_eq!(
            AdwinError::Clock.to_string(),
            "adwin: clock must be >= 1, got 0"
        );
    }

    #[test]
    fn params_deserialize_with_rivers_names() {
        let p: AdwinParams =
            serde_json::from_str(r#"{"delta": 0.01, "clock": 1, "grace_period": 0}"#).unwrap();
        assert_eq!(p.delta, 0.01);
        assert_eq!(p.clock, 1);
        assert_eq!(p.grace_period, 0);
        assert_eq!(p.max_buckets, 5);
        assert_eq!(p.max_window, DEFAULT_MAX_WINDOW);
        assert!(serde_json::from_str::<AdwinParams>(r#"{"width": 3}"#).is_err());
    }

    #[test]
    fn detects_a_shift_then_restarts() {
        let stream = gaussian(4000, 2000, 2.0, 1);
        let mut adwin = Adwin::default();
        let found = drifts(&mut adwin, &stream);
        assert!(!found.is_empty());
        assert!(found[0] >= 2000 && found[0] < 2200, "{found:?}");
        // Detections only on clock ticks (32 values after the start).
        assert_eq!((found[0] + 1) % 32, 0);

        let mut adwin = Adwin::default();
        for &x in &stream[..=found[0]] {
            adwin.update(x);
        }
        assert!(adwin.drift_detected());
        // River drops the oldest buckets until no cut holds ...
        assert!(adwin.width() < found[0] as u64 + 1);
        assert_consistent(&adwin);
        // ... and restarts from scratch on the next value.
        let v = adwin.update(5.0);
        assert_eq!(v.level, Level::Stable);
        assert_eq!(adwin.width(), 1);
        assert_eq!(adwin.total(), 5.0);
        assert_eq!(adwin.variance(), 0.0);
        assert_eq!(v.threshold, None);
    }

    #[test]
    fn clock_one_tests_after_every_value() {
        let stream = gaussian(4000, 2000, 2.0, 2);
        let every = drifts(
            &mut Adwin::new(AdwinParams {
                clock: 1,
                ..AdwinParams::default()
            })
            .unwrap(),
            &stream,
        );
        let default = drifts(&mut Adwin::default(), &stream);
        // Up to the first drift both hold the same window, and clock 1
        // tests it after every value: it is never later.
        assert!(
            every[0] >= 2000 && every[0] <= default[0],
            "{every:?} {default:?}"
        );
        assert_ne!((every[0] + 1) % 32, 0, "{every:?}: not on a tick of 32");
    }

    #[test]
    fn verdict_between_tests_repeats_the_last_test() {
        let mut adwin = Adwin::default();
        let stream = gaussian(200, 200, 0.0, 3);
        for (i, &x) in stream.iter().enumerate() {
            let v = adwin.update(x);
            if i < 31 {
                assert_eq!((v.statistic, v.threshold), (0.0, None), "value {i}");
            } else {
                let last = (adwin.statistic, adwin.threshold);
                assert!(last.1.is_some_and(|t| t > 0.0));
                assert_eq!((v.statistic, v.threshold), last);
            }
        }
    }

    #[test]
    fn keeps_the_histogram_consistent() {
        for max_buckets in [1, 2, 5] {
            for clock in [1, 5] {
                let params = AdwinParams {
                    max_buckets,
                    clock,
                    delta: 0.05,
                    ..AdwinParams::default()
                };
                let mut adwin = Adwin::new(params).unwrap();
                let mut stream = gaussian(3000, 1000, 1.5, u64::from(max_buckets));
                stream.extend(gaussian(3000, 1000, -1.5, 7));
                let mut n = 0;
                for (i, &x) in stream.iter().enumerate() {
                    n += usize::from(adwin.update(x).level == Level::Drift);
                    assert_consistent(&adwin);
                    if i % 101 == 0 && !adwin.drift_detected() {
                        // The window's variance is its values' (up to
                        // rounding): the bucket merges lose nothing.
                        let w = adwin.width() as usize;
                        let window = &stream[i + 1 - w..=i];
                        let mean = window.iter().sum::<f64>() / w as f64;
                        let ss: f64 = window.iter().map(|v| (v - mean).powi(2)).sum();
                        assert!((ss - adwin.variance()).abs() <= 1e-6 * (1.0 + ss));
                    }
                }
                assert!(n >= 2, "max_buckets {max_buckets}, clock {clock}: {n}");
            }
        }
    }

    #[test]
    fn max_window_caps_the_window() {
        let params = AdwinParams {
            max_window: 1000,
            ..AdwinParams::default()
        };
        let mut adwin = Adwin::new(params).unwrap();
        let stream = gaussian(20_000, 20_000, 0.0, 4);
        for &x in &stream {
            adwin.update(x);
            assert!(adwin.width() <= 1000);
            assert_consistent(&adwin);
        }
        assert!(adwin.width() > 500, "{}", adwin.width());
        // Still detects, on the capped window.
        let mut adwin = Adwin::new(params).unwrap();
        assert!(!drifts(&mut adwin, &gaussian(8000, 6000, 2.0, 5)).is_empty());
        // One bucket per row: the window can be a single bucket, trimmed
        // whole.
        let mut adwin = Adwin::new(AdwinParams {
            max_buckets: 1,
            min_window_length: 1,
            max_window: 2,
            ..AdwinParams::default()
        })
        .unwrap();
        for x in gaussian(100, 100, 0.0, 6) {
            adwin.update(x);
            assert!(adwin.width() <= 2);
            assert!(adwin.total().is_finite() && adwin.variance().is_finite());
            assert_consistent(&adwin);
        }
    }

    #[test]
    fn reset_forgets_everything_but_parameters() {
        let params = AdwinParams {
            clock: 4,
            delta: 0.1,
            ..AdwinParams::default()
        };
        let fresh = Adwin::new(params).unwrap();
        let mut adwin = fresh.clone();
        let stream = gaussian(3000, 1500, 1.0, 8);
        for &x in &stream {
            adwin.update(x);
        }
        assert_ne!(adwin, fresh);
        let bytes = adwin.memory_bytes();
        adwin.reset();
        assert_eq!(adwin, fresh);
        assert!(adwin.memory_bytes() <= bytes);
        // And it runs as a fresh one would.
        let mut twin = fresh.clone();
        for &x in &stream {
            assert_eq!(adwin.update(x), twin.update(x));
        }
        assert_eq!(adwin, twin);
    }

    #[test]
    fn ignores_non_finite_values() {
        let mut a = Adwin::new(AdwinParams {
            clock: 3,
            ..AdwinParams::default()
        })
        .unwrap();
        let mut b = a.clone();
        for (i, x) in gaussian(3000, 1500, 1.5, 9).into_iter().enumerate() {
            let va = a.update(x);
            if i % 10 == 0 {
                assert_eq!(b.update(f64::NAN).level, Level::Stable);
                b.update(f64::NEG_INFINITY);
            }
            assert_eq!(b.update(x), va);
        }
        assert_eq!(a, b);
    }

    /// Through JSON text and back, as the changelog stores detector state:
    /// exact (serde_json's `float_roundtrip` feature is on in this crate).
    fn round_trip(d: &Adwin) -> Adwin {
        let text = serde_json::to_string(d).unwrap();
        let back: Adwin = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, d, "{text}");
        assert!(back.memory_bytes() <= d.params.memory_bound());
        back
    }

    #[test]
    fn serde_round_trip() {
        let mut adwin = Adwin::new(AdwinParams {
            clock: 5,
            max_buckets: 3,
            ..AdwinParams::default()
        })
        .unwrap();
        assert_eq!(round_trip(&adwin), adwin);
        let mut stream = gaussian(3000, 1000, 2.0, 10);
        stream.extend(gaussian(3000, 1000, -2.0, 11));
        let mut checked_a_drift = false;
        for (i, &x) in stream.iter().enumerate() {
            adwin.update(x);
            if i % 97 == 0 || adwin.drift_detected() {
                checked_a_drift |= adwin.drift_detected();
                let mut back = round_trip(&adwin);
                assert_eq!(back, adwin, "after value {i}");
                // And it carries on identically.
                let mut twin = adwin.clone();
                for &y in &stream[i + 1..(i + 100).min(stream.len())] {
                    assert_eq!(back.update(y), twin.update(y));
                }
                assert_eq!(back, twin);
            }
        }
        assert!(checked_a_drift);
    }

    #[test]
    fn deserialization_rejects_inconsistent_states() {
        let mut adwin = Adwin::default();
        for x in gaussian(500, 500, 0.0, 12) {
            adwin.update(x);
        }
        let good = serde_json::to_value(&adwin).unwrap();
        let broken = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            edit(&mut v);
            serde_json::from_value::<Adwin>(v).unwrap_err().to_string()
        };
        assert!(broken(&|v| v["params"]["clock"] = 0.into()).contains("clock"));
        assert!(broken(&|v| v["rows"] = serde_json::json!([])).contains("rows"));
        assert!(broken(&|v| v["width"] = 499.0.into()).contains("width"));
        assert!(broken(&|v| v["tick"] = 32.into()).contains("tick"));
        assert!(broken(&|v| {
            v["rows"][0]["totals"] = serde_json::json!([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            v["rows"][0]["variances"] = serde_json::json!([0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        })
        .contains("row"));
        assert!(broken(&|v| v["extra"] = 1.into()).contains("extra"));
        assert!(serde_json::from_value::<Adwin>(good).is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        // Documented figures (64-bit targets): 25 rows at most with the
        // default `max_window` 2^24, 3,712 bytes.
        let params = AdwinParams::default();
        assert_eq!(params.max_rows(), 25);
        if size_of::<usize>() == 8 {
            assert_eq!(size_of::<Adwin>(), 112);
            assert_eq!(size_of::<Row>(), 48);
            assert_eq!(params.memory_bound(), 3712);
        }
        let small = AdwinParams {
            max_window: 4096,
            ..params
        };
        assert_eq!(small.max_rows(), 13);

        // 10^6 stationary values: the window grows (River's would without
        // limit), the memory as log W, under the bound.
        let mut adwin = Adwin::new(params).unwrap();
        let mut capped = Adwin::new(small).unwrap();
        let fresh = adwin.memory_bytes();
        let mut rng = StdRng::seed_from_u64(13);
        let mut most = 0;
        let mut most_capped = 0;
        for _ in 0..1_000_000 {
            let x: f64 = rng.sample(StandardNormal);
            adwin.update(x);
            capped.update(x);
            most = most.max(adwin.memory_bytes());
            most_capped = most_capped.max(capped.memory_bytes());
        }
        assert!(adwin.width() > 100_000, "{}", adwin.width());
        assert!(capped.width() <= 4096);
        assert!(fresh < most);
        assert!(most <= params.memory_bound(), "{most}");
        assert!(most_capped <= small.memory_bound(), "{most_capped}");
        // A full histogram: rows of 2^0 .. 2^9 with 4 or 5 buckets each
        // (at least `max_buckets - 1` below the last row), under the bound
        // of 13 rows.
        let full = AdwinParams {
            max_window: 1 << 12,
            clock: 1 << 20,
            ..params
        };
        let mut grown = Adwin::new(full).unwrap();
        for i in 0..100_000 {
            grown.update(f64::from(i % 7));
        }
        assert_eq!(grown.rows.len(), 10);
        assert!(grown.rows[..9].iter().all(|r| r.len() >= 4));
        assert!(grown.memory_bytes() <= full.memory_bound());
    }
}
