//! HDDM-A: drift detection with Hoeffding's bounds on moving averages
//! (the "A-test" of Frías-Blanco et al.), on a model's error rate.
//!
//! **What.** The input is a stream of values in `[0, 1]`, typically errors
//! (1 wrong, 0 right). The detector keeps the mean `z` of everything seen
//! since the last restart and a *cut point*: a snapshot `(n_cut, mean_cut)`
//! of `z` taken where `z`'s mean plus its Hoeffding bound
//! `sqrt(ln(1 / drift_confidence) / (2 n))` was lowest. It declares
//!
//! * a **drift** when `z - mean_cut >= eps(drift_confidence)`,
//! * else a **warning** when `z - mean_cut >= eps(warning_confidence)`,
//!
//! with `eps(c) = sqrt(m / 2 * ln(2 / c))`, `m = (n - n_cut) / n_cut / n`:
//! Hoeffding's bound for the difference of the means before and after the
//! cut. In two-sided mode a second cut point, where the mean minus its
//! bound was highest, tests decreases the same way. A drift restarts the
//! detector from scratch on the next value.
//!
//! **Why.** Unlike DDM it makes no distributional assumption (only
//! boundedness), comes with a guaranteed false-alarm rate per test, and
//! detects decreases too if asked (a model getting better is also a
//! change). Constant memory, a few logarithms per value.
//!
//! **Reference.** I. Frías-Blanco, J. del Campo-Ávila, G. Ramos-Jiménez et
//! al., *Online and non-parametric drift detection methods based on
//! Hoeffding's bounds*, IEEE TKDE 27(3), 2015, 810–823. This is a
//! line-for-line port of River 0.26.1's `river.drift.binary.HDDMA`
//! (`river/drift/binary/hddm_a.py`, itself after MOA), defaults included,
//! checked against River's detections and warnings in
//! `tests/river_detectors.rs` (fixtures written by
//! `scripts/river/hddm_a.py`). HDDM-W (weighted) is not implemented.
//!
//! Faithful details of River worth knowing:
//! * the cut points move with the *drift* confidence's bound whatever the
//!   warning confidence;
//! * in two-sided mode the decrease test only ever *sets* flags: a
//!   decrease drift after an increase warning leaves both River flags up
//!   (the verdict is then [`Level::Drift`]; [`HddmA::warning_detected`]
//!   still says what River says);
//! * there is no warm-up: the tests run from the second value on.
//!
//! Values are not clamped to `[0, 1]` (as in River), but the bounds only
//! hold there. Non-finite values are ignored (River would take them in and
//! be poisoned for good).

use std::mem::size_of;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Detector, Level, Verdict};

/// Parameters of [`HddmA`]; field names and defaults are River's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HddmAParams {
    /// Confidence (false-alarm probability) of a drift, in `(0, 1)`.
    pub drift_confidence: f64,
    /// Confidence of a warning, in `[drift_confidence, 1)`.
    pub warning_confidence: f64,
    /// Whether decreases are detected too.
    pub two_sided_test: bool,
}

impl Default for HddmAParams {
    /// River's defaults: `drift_confidence=0.001, warning_confidence=0.005,
    /// two_sided_test=False`.
    fn default() -> Self {
        HddmAParams {
            drift_confidence: 0.001,
            warning_confidence: 0.005,
            two_sided_test: false,
        }
    }
}

/// Invalid [`HddmAParams`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum HddmAError {
    #[error("hddm-a: drift_confidence must be in (0, 1), got {0}")]
    DriftConfidence(f64),
    #[error(
        "hddm-a: warning_confidence must be in [drift_confidence ({drift}), 1), got {warning}"
    )]
    WarningConfidence { warning: f64, drift: f64 },
}

impl HddmAParams {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), HddmAError> {
        let d = self.drift_confidence;
        if !(d > 0.0 && d < 1.0) {
            return Err(HddmAError::DriftConfidence(d));
        }
        let w = self.warning_confidence;
        if !(w >= d && w < 1.0) {
            return Err(HddmAError::WarningConfidence {
                warning: w,
                drift: d,
            });
        }
        Ok(())
    }
}

/// A running mean, as River's `stats.Mean` (and a snapshot of one).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
struct Mean {
    n: u64,
    mean: f64,
}

impl Mean {
    /// River: `n += 1; mean += (1 / n) * (x - mean)`.
    fn update(&mut self, x: f64) {
        self.n += 1;
        self.mean += (1.0 / self.n as f64) * (x - self.mean);
    }
}

/// HDDM-A (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HddmA {
    params: HddmAParams,
    /// Everything since the last restart (River's `_z`).
    z: Mean,
    /// Cut point for increases (River's `_x_min`).
    x_min: Mean,
    /// Cut point for decreases (River's `_x_max`).
    x_max: Mean,
    /// River's `warning_detected` after the last value.
    warning_detected: bool,
    /// River's `drift_detected` after the last value: restart on the next.
    drift_detected: bool,
}

impl HddmA {
    /// A detector with the given parameters.
    pub fn new(params: HddmAParams) -> Result<Self, HddmAError> {
        params.validate()?;
        Ok(HddmA {
            params,
            z: Mean::default(),
            x_min: Mean::default(),
            x_max: Mean::default(),
            warning_detected: false,
            drift_detected: false,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &HddmAParams {
        &self.params
    }

    /// River's `warning_detected` after the last observation (false on an
    /// increase drift; in two-sided mode it can be true with a drift).
    pub fn warning_detected(&self) -> bool {
        self.warning_detected
    }

    /// Whether the last observation was declared a drift (River's
    /// `drift_detected`).
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// River's `_hoeffding_bound(n)`.
    fn hoeffding_bound(&self, n: u64) -> f64 {
        (1.0 / (2.0 * n as f64) * (1.0 / self.params.drift_confidence).ln()).sqrt()
    }

    /// The bound on the difference between `cut` and `z` at `confidence`,
    /// or `None` if the cut point is the whole stream (no test).
    fn epsilon(&self, cut: &Mean, confidence: f64) -> Option<f64> {
        if cut.n == self.z.n {
            return None;
        }
        let (n, n_cut) = (self.z.n as f64, cut.n as f64);
        let m = (n - n_cut) / n_cut * (1.0 / n);
        Some((m / 2.0 * (2.0 / confidence).ln()).sqrt())
    }

    /// River's `_mean_incr(confidence)`.
    fn mean_increased(&self, confidence: f64) -> bool {
        self.epsilon(&self.x_min, confidence)
            .is_some_and(|eps| self.z.mean - self.x_min.mean >= eps)
    }

    /// River's `_mean_decr(confidence)`.
    fn mean_decreased(&self, confidence: f64) -> bool {
        self.epsilon(&self.x_max, confidence)
            .is_some_and(|eps| self.x_max.mean - self.z.mean >= eps)
    }

    /// The change of the mean since the cut point and its drift bound:
    /// the increase, or in two-sided mode whichever side is closer to its
    /// bound.
    fn statistic(&self) -> (f64, Option<f64>) {
        let confidence = self.params.drift_confidence;
        let up = (
            self.z.mean - self.x_min.mean,
            self.epsilon(&self.x_min, confidence),
        );
        if !self.params.two_sided_test {
            return up;
        }
        let down = (
            self.x_max.mean - self.z.mean,
            self.epsilon(&self.x_max, confidence),
        );
        let ratio = |(gap, eps): (f64, Option<f64>)| match eps {
            Some(eps) if eps > 0.0 => gap / eps,
            _ => f64::NEG_INFINITY,
        };
        if ratio(down) > ratio(up) {
            down
        } else {
            up
        }
    }

    fn verdict(&self) -> Verdict {
        let (statistic, threshold) = self.statistic();
        Verdict {
            level: if self.drift_detected {
                Level::Drift
            } else if self.warning_detected {
                Level::Warning
            } else {
                Level::Stable
            },
            statistic,
            threshold,
        }
    }
}

impl Default for HddmA {
    /// River's defaults.
    fn default() -> Self {
        HddmA {
            params: HddmAParams::default(),
            z: Mean::default(),
            x_min: Mean::default(),
            x_max: Mean::default(),
            warning_detected: false,
            drift_detected: false,
        }
    }
}

impl Detector for HddmA {
    fn update(&mut self, x: f64) -> Verdict {
        if !x.is_finite() {
            let mut v = self.verdict();
            v.level = Level::Stable;
            return v;
        }
        if self.drift_detected {
            self.reset();
        }

        self.z.update(x);
        if self.x_min.n == 0 {
            self.x_min = self.z;
        }
        if self.x_max.n == 0 {
            self.x_max = self.z;
        }

        // Move the cut points.
        let eps_z = self.hoeffding_bound(self.z.n);
        let eps_x = self.hoeffding_bound(self.x_min.n);
        if self.x_min.mean + eps_x >= self.z.mean + eps_z {
            self.x_min = self.z;
        }
        let eps_x = self.hoeffding_bound(self.x_max.n);
        if self.x_max.mean - eps_x <= self.z.mean - eps_z {
            self.x_max = self.z;
        }

        let (drift, warning) = (self.params.drift_confidence, self.params.warning_confidence);
        if self.mean_increased(drift) {
            self.warning_detected = false;
            self.drift_detected = true;
        } else if self.mean_increased(warning) {
            self.warning_detected = true;
            self.drift_detected = false;
        } else {
            self.warning_detected = false;
            self.drift_detected = false;
        }

        if self.params.two_sided_test {
            if self.mean_decreased(drift) {
                self.drift_detected = true;
            } else if self.mean_decreased(warning) {
                self.warning_detected = true;
            }
        }

        self.verdict()
    }

    fn reset(&mut self) {
        self.z = Mean::default();
        self.x_min = Mean::default();
        self.x_max = Mean::default();
        self.warning_detected = false;
        self.drift_detected = false;
    }

    fn memory_bytes(&self) -> usize {
        size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0/1 errors at `before`% before `at` and `after`% from `at`,
    /// deterministically spread.
    fn errors(n: usize, at: usize, before: usize, after: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let rate = if i < at { before } else { after };
                if (i * 37) % 100 < rate {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn first(d: &mut HddmA, stream: &[f64], level: Level) -> Option<usize> {
        stream.iter().position(|&x| d.update(x).level == level)
    }

    #[test]
    fn defaults_are_rivers() {
        let p = HddmAParams::default();
        assert_eq!(
            (p.drift_confidence, p.warning_confidence, p.two_sided_test),
            (0.001, 0.005, false)
        );
        assert_eq!(HddmA::default(), HddmA::new(p).unwrap());
    }

    #[test]
    fn rejects_invalid_parameters() {
        let ok = HddmAParams::default();
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            assert!(matches!(
                HddmA::new(HddmAParams {
                    drift_confidence: bad,
                    ..ok
                }),
                Err(HddmAError::DriftConfidence(_))
            ));
        }
        for bad in [0.0005, 1.0, f64::NAN] {
            assert!(matches!(
                HddmA::new(HddmAParams {
                    warning_confidence: bad,
                    ..ok
                }),
                Err(HddmAError::WarningConfidence { .. })
            ));
        }
        assert!(HddmA::new(HddmAParams {
            drift_confidence: 0.01,
            warning_confidence: 0.01,
            two_sided_test: true
        })
        .is_ok());
        let p: HddmAParams = serde_json::from_str(r#"{"two_sided_test": true}"#).unwrap();
        assert!(p.two_sided_test);
        assert_eq!(p.drift_confidence, 0.001);
    }

    #[test]
    fn detects_an_increase_then_restarts() {
        let stream = errors(4000, 2000, 10, 40);
        let mut d = HddmA::default();
        let drift = first(&mut d, &stream, Level::Drift).unwrap();
        assert!(drift > 2000, "{drift}");
        assert!(d.drift_detected());
        assert_eq!(d.update(0.0).level, Level::Stable);
        assert_eq!(d.z.n, 1);
        assert_eq!(d.x_min, d.z);
    }

    #[test]
    fn decreases_only_in_two_sided_mode() {
        let stream = errors(4000, 2000, 40, 5);
        let mut one = HddmA::default();
        assert_eq!(first(&mut one, &stream, Level::Drift), None);
        let mut two = HddmA::new(HddmAParams {
            two_sided_test: true,
            ..HddmAParams::default()
        })
        .unwrap();
        let drift = first(&mut two, &stream, Level::Drift).unwrap();
        assert!(drift > 2000, "{drift}");
    }

    #[test]
    fn reset_forgets_everything_but_parameters() {
        let fresh = HddmA::new(HddmAParams {
            two_sided_test: true,
            ..HddmAParams::default()
        })
        .unwrap();
        let mut d = fresh.clone();
        for x in errors(500, 250, 10, 30) {
            d.update(x);
        }
        assert_ne!(d, fresh);
        d.reset();
        assert_eq!(d, fresh);
    }

    #[test]
    fn ignores_non_finite_values() {
        let mut a = HddmA::default();
        let mut b = HddmA::default();
        for (i, x) in errors(3000, 1500, 10, 40).into_iter().enumerate() {
            let va = a.update(x);
            if i % 7 == 0 {
                assert_eq!(b.update(f64::NEG_INFINITY).level, Level::Stable);
            }
            assert_eq!(b.update(x), va);
        }
        assert_eq!(a, b);
    }

    /// Through JSON text and back, as the changelog stores detector state:
    /// exact (serde_json's `float_roundtrip` feature is on in this crate).
    fn round_trip(d: &HddmA) -> HddmA {
        let text = serde_json::to_string(d).unwrap();
        let back: HddmA = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, d, "{text}");
        back
    }

    #[test]
    fn serde_round_trip() {
        let mut d = HddmA::new(HddmAParams {
            two_sided_test: true,
            ..HddmAParams::default()
        })
        .unwrap();
        assert_eq!(round_trip(&d), d);
        let mut stream = errors(3000, 1500, 10, 40);
        stream.extend(errors(3000, 1500, 40, 5));
        for (i, &x) in stream.iter().enumerate() {
            d.update(x);
            if i % 97 == 0 || d.drift_detected() || d.warning_detected() {
                let mut back = round_trip(&d);
                assert_eq!(back, d, "after value {i}");
                let mut twin = d.clone();
                for &y in &stream[i + 1..(i + 50).min(stream.len())] {
                    assert_eq!(back.update(y), twin.update(y));
                }
            }
        }
    }

    #[test]
    fn memory_is_constant() {
        let mut d = HddmA::default();
        let before = d.memory_bytes();
        assert_eq!(before, size_of::<HddmA>());
        for x in errors(100_000, 50_000, 5, 30) {
            d.update(x);
            assert_eq!(d.memory_bytes(), before);
        }
    }
}
