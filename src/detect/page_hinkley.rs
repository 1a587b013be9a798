//! Page-Hinkley test: a cumulative sum of the deviations from the running
//! mean, for changes of a stream's mean.
//!
//! **What.** After each value `x_t` the test updates the running mean
//! `m_t` of all values seen since the last restart (`x_t` included) and two
//! faded cumulative sums of the deviations,
//!
//! ```text
//! U_t = alpha * U_{t-1} + (x_t - m_t) - delta     (mean going up)
//! L_t = alpha * L_{t-1} + (x_t - m_t) + delta     (mean going down)
//! ```
//!
//! and compares `U_t - min U` (rise of `U` above its lowest point) and
//! `max L - L_t` (fall of `L` below its highest point) with `threshold`
//! (lambda), once `min_instances` values have been seen. `delta` is the
//! magnitude of change that is tolerated, `alpha` a forgetting factor (1
//! means none). A drift restarts the test from scratch on the next value.
//!
//! **Why.** Page-Hinkley is the classic sequential test for a shift of the
//! mean of a real-valued signal (a feature's window mean, a model's loss),
//! cheap (constant memory, a handful of flops) and with a single, readable
//! threshold in the signal's own units. It has no warning zone.
//!
//! **Reference.** E. S. Page, *Continuous Inspection Schemes*, Biometrika
//! 41 (1954) 100–115; this is a line-for-line port of River 0.26.1's
//! `river.drift.PageHinkley` (`river/drift/page_hinkley.py`), defaults
//! included, checked against River's detections in
//! `tests/river_detectors.rs` (fixtures written by
//! `scripts/river/page_hinkley.py`).
//!
//! Faithful details of River worth knowing:
//! * the running mean includes the current value, so the first deviation
//!   is always 0;
//! * the running minimum of `U` starts at +infinity but the running
//!   maximum of `L` starts at -1 (not -infinity), as in River; since the
//!   first `L` is `delta >= 0`, this never shows;
//! * `min U` and `max L` are tracked during the warm-up too, only the
//!   comparison with the threshold waits for `min_instances` values;
//! * with the defaults (`threshold` 50 in the signal's units, `alpha`
//!   0.9999), a stationary N(0, 1) stream does raise false alarms after a
//!   few hundred to a few thousand values: the sums are close to a random
//!   walk. Scale `threshold` to the signal.
//!
//! Non-finite observations (NaN, ±infinity) are ignored: they would
//! poison the running mean for good. River would take them in.

use std::mem::size_of;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Detector, Level, Verdict};

/// Which changes of the mean are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Increases only (River's `"up"`).
    Up,
    /// Decreases only (River's `"down"`).
    Down,
    /// Both (River's `"both"`, the default).
    #[default]
    Both,
}

/// Parameters of [`PageHinkley`]; field names and defaults are River's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PageHinkleyParams {
    /// Values seen (since the last restart) before a drift can be declared.
    pub min_instances: u64,
    /// Magnitude of change tolerated, subtracted from (added to) every
    /// deviation; `>= 0`.
    pub delta: f64,
    /// Detection threshold (lambda), in the signal's units; `> 0`.
    pub threshold: f64,
    /// Forgetting factor of the cumulative sums, in `(0, 1]`.
    pub alpha: f64,
    /// Which direction of change is detected.
    pub mode: Mode,
}

impl Default for PageHinkleyParams {
    /// River's defaults: `min_instances=30, delta=0.005, threshold=50,
    /// alpha=1-0.0001, mode="both"`.
    fn default() -> Self {
        PageHinkleyParams {
            min_instances: 30,
            delta: 0.005,
            threshold: 50.0,
            alpha: 1.0 - 0.0001,
            mode: Mode::Both,
        }
    }
}

/// Invalid [`PageHinkleyParams`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PageHinkleyError {
    #[error("page-hinkley: delta must be finite and >= 0, got {0}")]
    Delta(f64),
    #[error("page-hinkley: threshold must be finite and > 0, got {0}")]
    Threshold(f64),
    #[error("page-hinkley: alpha must be in (0, 1], got {0}")]
    Alpha(f64),
}

impl PageHinkleyParams {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), PageHinkleyError> {
        if !(self.delta.is_finite() && self.delta >= 0.0) {
            return Err(PageHinkleyError::Delta(self.delta));
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(PageHinkleyError::Threshold(self.threshold));
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(PageHinkleyError::Alpha(self.alpha));
        }
        Ok(())
    }
}

/// The Page-Hinkley test (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    params: PageHinkleyParams,
    /// Values seen since the last restart (River's `_x_mean.n`).
    n: u64,
    /// Their running mean (River's `_x_mean`).
    mean: f64,
    /// `U_t` (River's `_sum_increase`).
    sum_increase: f64,
    /// `L_t` (River's `_sum_decrease`).
    sum_decrease: f64,
    /// `min U` so far; `None` is River's initial +infinity (kept out of
    /// the state so that it serializes to JSON).
    min_increase: Option<f64>,
    /// `max L` so far (River starts it at -1).
    max_decrease: f64,
    /// A drift was declared on the last value: restart on the next one.
    drift_detected: bool,
}

impl PageHinkley {
    /// A test with the given parameters.
    pub fn new(params: PageHinkleyParams) -> Result<Self, PageHinkleyError> {
        params.validate()?;
        Ok(PageHinkley {
            params,
            n: 0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: None,
            max_decrease: -1.0,
            drift_detected: false,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &PageHinkleyParams {
        &self.params
    }

    /// Whether the last observation was declared a drift (River's
    /// `drift_detected`).
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// The rise of `U` above its minimum and the fall of `L` below its
    /// maximum (River's `test_increase`, `test_decrease`).
    fn tests(&self) -> (f64, f64) {
        let min_increase = self.min_increase.unwrap_or(f64::INFINITY);
        (
            self.sum_increase - min_increase,
            self.max_decrease - self.sum_decrease,
        )
    }

    /// The statistic compared with the threshold in the current mode (the
    /// larger of the two in mode `Both`).
    fn statistic(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        let (increase, decrease) = self.tests();
        match self.params.mode {
            Mode::Up => increase,
            Mode::Down => decrease,
            Mode::Both => increase.max(decrease),
        }
    }
}

impl Default for PageHinkley {
    /// River's defaults.
    fn default() -> Self {
        let params = PageHinkleyParams::default();
        PageHinkley {
            params,
            n: 0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: None,
            max_decrease: -1.0,
            drift_detected: false,
        }
    }
}

impl Detector for PageHinkley {
    fn update(&mut self, x: f64) -> Verdict {
        let threshold = Some(self.params.threshold);
        if !x.is_finite() {
            return Verdict::stable(self.statistic(), threshold);
        }
        if self.drift_detected {
            self.reset();
        }

        // River's stats.Mean: n += 1; mean += (1 / n) * (x - mean).
        self.n += 1;
        self.mean += (1.0 / self.n as f64) * (x - self.mean);
        let dev = x - self.mean;

        let p = &self.params;
        self.sum_increase = p.alpha * self.sum_increase + dev - p.delta;
        self.sum_decrease = p.alpha * self.sum_decrease + dev + p.delta;

        if self.min_increase.is_none_or(|min| self.sum_increase < min) {
            self.min_increase = Some(self.sum_increase);
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }

        if self.n >= p.min_instances {
            let (increase, decrease) = self.tests();
            self.drift_detected = match p.mode {
                Mode::Up => increase > p.threshold,
                Mode::Down => decrease > p.threshold,
                Mode::Both => increase > p.threshold || decrease > p.threshold,
            };
        }

        Verdict {
            level: if self.drift_detected {
                Level::Drift
            } else {
                Level::Stable
            },
            statistic: self.statistic(),
            threshold,
        }
    }

    fn reset(&mut self) {
        self.n = 0;
        self.mean = 0.0;
        self.sum_increase = 0.0;
        self.sum_decrease = 0.0;
        self.min_increase = None;
        self.max_decrease = -1.0;
        self.drift_detected = false;
    }

    fn memory_bytes(&self) -> usize {
        size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shifted(n: usize, at: usize, delta: f64) -> Vec<f64> {
        // Deterministic, mildly noisy, no RNG needed.
        (0..n)
            .map(|i| {
                let noise = ((i * 7919) % 101) as f64 / 50.0 - 1.0;
                noise + if i >= at { delta } else { 0.0 }
            })
            .collect()
    }

    fn small() -> PageHinkleyParams {
        PageHinkleyParams {
            threshold: 10.0,
            ..PageHinkleyParams::default()
        }
    }

    #[test]
    fn defaults_are_rivers() {
        let p = PageHinkleyParams::default();
        assert_eq!(p.min_instances, 30);
        assert_eq!(p.delta, 0.005);
        assert_eq!(p.threshold, 50.0);
        assert_eq!(p.alpha, 0.9999);
        assert_eq!(p.mode, Mode::Both);
        assert_eq!(PageHinkley::default(), PageHinkley::new(p).unwrap());
    }

    #[test]
    fn rejects_invalid_parameters() {
        let ok = PageHinkleyParams::default();
        for (params, err) in [
            (
                PageHinkleyParams { delta: -0.1, ..ok },
                PageHinkleyError::Delta(-0.1),
            ),
            (
                PageHinkleyParams {
                    threshold: 0.0,
                    ..ok
                },
                PageHinkleyError::Threshold(0.0),
            ),
            (
                PageHinkleyParams {
                    threshold: f64::INFINITY,
                    ..ok
                },
                PageHinkleyError::Threshold(f64::INFINITY),
            ),
            (
                PageHinkleyParams { alpha: 0.0, ..ok },
                PageHinkleyError::Alpha(0.0),
            ),
            (
                PageHinkleyParams { alpha: 1.5, ..ok },
                PageHinkleyError::Alpha(1.5),
            ),
        ] {
            assert_eq!(PageHinkley::new(params).unwrap_err(), err);
        }
        assert!(matches!(
            PageHinkley::new(PageHinkleyParams {
                delta: f64::NAN,
                ..ok
            }),
            Err(PageHinkleyError::Delta(_))
        ));
        assert!(PageHinkley::new(PageHinkleyParams {
            alpha: 1.0,
            delta: 0.0,
            min_instances: 0,
            ..ok
        })
        .is_ok());
    }

    #[test]
    fn params_deserialize_with_rivers_names() {
        let p: PageHinkleyParams =
            serde_json::from_str(r#"{"threshold": 20.0, "mode": "down"}"#).unwrap();
        assert_eq!(p.threshold, 20.0);
        assert_eq!(p.mode, Mode::Down);
        assert_eq!(p.min_instances, 30);
        assert!(serde_json::from_str::<PageHinkleyParams>(r#"{"mode": "sideways"}"#).is_err());
    }

    #[test]
    fn detects_a_shift_then_restarts() {
        let mut ph = PageHinkley::new(small()).unwrap();
        let stream = shifted(600, 300, 3.0);
        let drifts: Vec<usize> = stream
            .iter()
            .enumerate()
            .filter(|(_, &x)| ph.update(x).level == Level::Drift)
            .map(|(i, _)| i)
            .collect();
        assert!(!drifts.is_empty());
        assert!(drifts[0] >= 300, "{drifts:?}");
        // The value after a drift starts a fresh test.
        let mut ph = PageHinkley::new(small()).unwrap();
        for &x in &stream[..=drifts[0]] {
            ph.update(x);
        }
        assert!(ph.drift_detected());
        let v = ph.update(0.0);
        assert_eq!(v.level, Level::Stable);
        assert_eq!(ph.n, 1);
    }

    #[test]
    fn mode_selects_direction() {
        let up = shifted(600, 300, 3.0);
        let down = shifted(600, 300, -3.0);
        let count = |mode, stream: &[f64]| {
            let mut ph = PageHinkley::new(PageHinkleyParams { mode, ..small() }).unwrap();
            stream
                .iter()
                .filter(|&&x| ph.update(x).level == Level::Drift)
                .count()
        };
        assert!(count(Mode::Up, &up) > 0);
        assert_eq!(count(Mode::Up, &down), 0);
        assert!(count(Mode::Down, &down) > 0);
        assert_eq!(count(Mode::Down, &up), 0);
        assert!(count(Mode::Both, &up) > 0 && count(Mode::Both, &down) > 0);
    }

    #[test]
    fn no_drift_during_warm_up() {
        let mut ph = PageHinkley::new(PageHinkleyParams {
            min_instances: 100,
            threshold: 1.0,
            ..small()
        })
        .unwrap();
        for i in 0..99 {
            let x = if i < 50 { 0.0 } else { 100.0 };
            assert_eq!(ph.update(x).level, Level::Stable);
        }
        assert_eq!(ph.update(100.0).level, Level::Drift);
    }

    #[test]
    fn reset_forgets_everything_but_parameters() {
        let params = PageHinkleyParams {
            mode: Mode::Up,
            ..small()
        };
        let fresh = PageHinkley::new(params).unwrap();
        let mut ph = fresh.clone();
        for x in shifted(500, 250, 2.0) {
            ph.update(x);
        }
        assert_ne!(ph, fresh);
        ph.reset();
        assert_eq!(ph, fresh);
    }

    #[test]
    fn ignores_non_finite_values() {
        let mut a = PageHinkley::new(small()).unwrap();
        let mut b = a.clone();
        for (i, x) in shifted(400, 200, 2.0).into_iter().enumerate() {
            let va = a.update(x);
            if i % 10 == 0 {
                assert_eq!(b.update(f64::NAN).level, Level::Stable);
                b.update(f64::INFINITY);
            }
            assert_eq!(b.update(x), va);
        }
        assert_eq!(a, b);
    }

    /// Through JSON text and back, as the changelog stores detector state:
    /// exact (serde_json's `float_roundtrip` feature is on in this crate).
    fn round_trip(d: &PageHinkley) -> PageHinkley {
        let text = serde_json::to_string(d).unwrap();
        let back: PageHinkley = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, d, "{text}");
        back
    }

    #[test]
    fn serde_round_trip() {
        let mut ph = PageHinkley::new(PageHinkleyParams {
            mode: Mode::Down,
            ..small()
        })
        .unwrap();
        assert_eq!(round_trip(&ph), ph);
        let mut stream = shifted(3000, 1000, -2.0);
        stream.extend(shifted(3000, 1000, 2.0));
        for (i, &x) in stream.iter().enumerate() {
            ph.update(x);
            if i % 97 == 0 || ph.drift_detected() {
                let mut back = round_trip(&ph);
                assert_eq!(back, ph, "after value {i}");
                // And it carries on identically.
                let mut twin = ph.clone();
                for &y in &stream[i + 1..(i + 50).min(stream.len())] {
                    assert_eq!(back.update(y), twin.update(y));
                }
            }
        }
    }

    #[test]
    fn memory_is_constant() {
        let mut ph = PageHinkley::default();
        let before = ph.memory_bytes();
        assert_eq!(before, size_of::<PageHinkley>());
        for x in shifted(100_000, 50_000, 1.0) {
            ph.update(x);
            assert_eq!(ph.memory_bytes(), before);
        }
    }
}
