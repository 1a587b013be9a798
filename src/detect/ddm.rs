//! DDM, the Drift Detection Method of Gama et al.: a warning zone and a
//! drift alarm on a model's error rate.
//!
//! **What.** The input is a stream of errors: 1 when the model was wrong,
//! 0 when it was right. After `n` values the error rate is `p` (their mean)
//! and its standard deviation `s = sqrt(p (1 - p) / n)`. Once more than
//! `warm_start` values have been seen, the detector remembers `p_min` and
//! `s_min` at the point where `p + s` was lowest, and declares
//!
//! * a **warning** when `p + s > p_min + warning_threshold * s_min`,
//! * a **drift** when `p + s > p_min + drift_threshold * s_min` (then no
//!   warning), after which it restarts from scratch on the next value.
//!
//! **Why.** While the concept is stationary a learner's error rate falls
//! or stays put as it sees more data (the PAC premise); a significant rise
//! of `p + s` above its best level means the data changed. The warning
//! zone is where a retraining set can start being collected. Constant
//! memory, a square root per value.
//!
//! **Reference.** J. Gama, P. Medas, G. Castillo, P. Rodrigues, *Learning
//! with Drift Detection*, SBIA 2004, 286–295. This is a line-for-line port
//! of River 0.26.1's `river.drift.binary.DDM`
//! (`river/drift/binary/ddm.py`), defaults included, checked against
//! River's detections and warnings in `tests/river_detectors.rs` (fixtures
//! written by `scripts/river/ddm.py`).
//!
//! Faithful details of River worth knowing:
//! * the tests start at `n > warm_start` (strictly), and `p_min`, `s_min`
//!   are only recorded from then on (with `<=`: the latest minimum wins);
//! * they are never reset except by a drift (nor by a warning);
//! * if the error rate is 0 when the warm-up ends, `s_min` is 0 and the
//!   very next error is a drift (any `p + s > 0`): DDM is touchy on
//!   streams with rare errors.
//!
//! Values are expected in `[0, 1]` (0/1 errors, or probabilities); they are
//! not clamped, as in River. Non-finite values are ignored (River would
//! take them in and be poisoned for good).

use std::mem::size_of;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Detector, Level, Verdict};

/// Parameters of [`Ddm`]; field names and defaults are River's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdmParams {
    /// Values seen (since the last restart) before anything is tested:
    /// the tests start at value `warm_start + 1`.
    pub warm_start: u64,
    /// Multiple of `s_min` above `p_min` that is a warning; `> 0`.
    pub warning_threshold: f64,
    /// Multiple of `s_min` above `p_min` that is a drift;
    /// `>= warning_threshold`.
    pub drift_threshold: f64,
}

impl Default for DdmParams {
    /// River's defaults: `warm_start=30, warning_threshold=2,
    /// drift_threshold=3`.
    fn default() -> Self {
        DdmParams {
            warm_start: 30,
            warning_threshold: 2.0,
            drift_threshold: 3.0,
        }
    }
}

/// Invalid [`DdmParams`].
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DdmError {
    #[error("ddm: warning_threshold must be finite and > 0, got {0}")]
    WarningThreshold(f64),
    #[error(
        "ddm: drift_threshold must be finite and >= warning_threshold ({warning}), got {drift}"
    )]
    DriftThreshold { drift: f64, warning: f64 },
}

impl DdmParams {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), DdmError> {
        if !(self.warning_threshold.is_finite() && self.warning_threshold > 0.0) {
            return Err(DdmError::WarningThreshold(self.warning_threshold));
        }
        if !(self.drift_threshold.is_finite() && self.drift_threshold >= self.warning_threshold) {
            return Err(DdmError::DriftThreshold {
                drift: self.drift_threshold,
                warning: self.warning_threshold,
            });
        }
        Ok(())
    }
}

/// `p` and `s` where `p + s` was lowest (River's `_p_min`, `_s_min`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Minimum {
    p: f64,
    s: f64,
    /// `p + s`, as River keeps it (`_ps_min`).
    ps: f64,
}

/// The Drift Detection Method (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ddm {
    params: DdmParams,
    /// Values seen since the last restart (River's `_p.n`).
    n: u64,
    /// Their mean, the error rate (River's `_p`).
    p: f64,
    /// `None` until the warm-up is over (River's `None`s and infinite
    /// `_ps_min`, kept out of the state so that it serializes to JSON).
    min: Option<Minimum>,
    /// River's `warning_detected` after the last value.
    warning_detected: bool,
    /// River's `drift_detected` after the last value: restart on the next.
    drift_detected: bool,
}

impl Ddm {
    /// A detector with the given parameters.
    pub fn new(params: DdmParams) -> Result<Self, DdmError> {
        params.validate()?;
        Ok(Ddm {
            params,
            n: 0,
            p: 0.0,
            min: None,
            warning_detected: false,
            drift_detected: false,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &DdmParams {
        &self.params
    }

    /// Whether the last observation put the detector in the warning zone
    /// (River's `warning_detected`; false on a drift).
    pub fn warning_detected(&self) -> bool {
        self.warning_detected
    }

    /// Whether the last observation was declared a drift (River's
    /// `drift_detected`).
    pub fn drift_detected(&self) -> bool {
        self.drift_detected
    }

    /// `s = sqrt(p (1 - p) / n)`.
    fn s(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        (self.p * (1.0 - self.p) / self.n as f64).sqrt()
    }

    fn drift_line(&self) -> Option<f64> {
        self.min.map(|m| m.p + self.params.drift_threshold * m.s)
    }

    fn verdict(&self) -> Verdict {
        Verdict {
            level: if self.drift_detected {
                Level::Drift
            } else if self.warning_detected {
                Level::Warning
            } else {
                Level::Stable
            },
            statistic: self.p + self.s(),
            threshold: self.drift_line(),
        }
    }
}

impl Default for Ddm {
    /// River's defaults.
    fn default() -> Self {
        Ddm {
            params: DdmParams::default(),
            n: 0,
            p: 0.0,
            min: None,
            warning_detected: false,
            drift_detected: false,
        }
    }
}

impl Detector for Ddm {
    fn update(&mut self, x: f64) -> Verdict {
        if !x.is_finite() {
            let mut v = self.verdict();
            v.level = Level::Stable;
            return v;
        }
        if self.drift_detected {
            self.reset();
        }

        // River's stats.Mean: n += 1; mean += (1 / n) * (x - mean).
        self.n += 1;
        self.p += (1.0 / self.n as f64) * (x - self.p);
        let p = self.p;
        let s = self.s();
        let ps = p + s;

        if self.n > self.params.warm_start {
            // `p + s <= ps_min`, with `ps_min` +infinity at first (a NaN `s`,
            // from a value outside [0, 1], never qualifies).
            if self.min.is_none_or(|m| ps <= m.ps) && !ps.is_nan() {
                self.min = Some(Minimum { p, s, ps: p + s });
            }
            // River would raise (None arithmetic) if no minimum is known yet;
            // that only happens with NaN statistics: stay quiet.
            if let Some(m) = self.min {
                self.warning_detected = ps > m.p + self.params.warning_threshold * m.s;
                if ps > m.p + self.params.drift_threshold * m.s {
                    self.drift_detected = true;
                    self.warning_detected = false;
                }
            }
        }

        self.verdict()
    }

    fn reset(&mut self) {
        self.n = 0;
        self.p = 0.0;
        self.min = None;
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

    /// 0/1 errors at rate `num/den` before `at` and `num2/den` from `at`,
    /// deterministically spread.
    fn errors(n: usize, at: usize, before: usize, after: usize) -> Vec<f64> {
        (0..n)
            .map(|i| {
                let k = (i * 37) % 100;
                let rate = if i < at { before } else { after };
                if k < rate {
                    1.0
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn levels(d: &mut Ddm, stream: &[f64]) -> Vec<Level> {
        stream.iter().map(|&x| d.update(x).level).collect()
    }

    #[test]
    fn defaults_are_rivers() {
        let p = DdmParams::default();
        assert_eq!(
            (p.warm_start, p.warning_threshold, p.drift_threshold),
            (30, 2.0, 3.0)
        );
        assert_eq!(Ddm::default(), Ddm::new(p).unwrap());
    }

    #[test]
    fn rejects_invalid_parameters() {
        let ok = DdmParams::default();
        assert_eq!(
            Ddm::new(DdmParams {
                warning_threshold: 0.0,
                ..ok
            })
            .unwrap_err(),
            DdmError::WarningThreshold(0.0)
        );
        assert!(matches!(
            Ddm::new(DdmParams {
                warning_threshold: f64::NAN,
                ..ok
            }),
            Err(DdmError::WarningThreshold(_))
        ));
        assert_eq!(
            Ddm::new(DdmParams {
                drift_threshold: 1.0,
                ..ok
            })
            .unwrap_err(),
            DdmError::DriftThreshold {
                drift: 1.0,
                warning: 2.0
            }
        );
        assert!(Ddm::new(DdmParams {
            drift_threshold: f64::INFINITY,
            ..ok
        })
        .is_err());
        assert!(Ddm::new(DdmParams {
            warm_start: 0,
            warning_threshold: 2.0,
            drift_threshold: 2.0
        })
        .is_ok());
        let e: DdmParams = serde_json::from_str(r#"{"warm_start": 5}"#).unwrap();
        assert_eq!(e.warm_start, 5);
        assert_eq!(e.drift_threshold, 3.0);
    }

    #[test]
    fn warns_then_drifts_on_a_rate_increase_then_restarts() {
        let mut d = Ddm::default();
        let stream = errors(4000, 2000, 10, 40);
        let lv = levels(&mut d, &stream);
        assert!(lv[..2000].iter().all(|&l| l != Level::Drift));
        let drift = lv.iter().position(|&l| l == Level::Drift).unwrap();
        let warning = lv.iter().position(|&l| l == Level::Warning).unwrap();
        assert!(warning < drift && drift > 2000, "{warning} {drift}");

        // The next value starts afresh.
        let mut d = Ddm::default();
        levels(&mut d, &stream[..=drift]);
        assert!(d.drift_detected() && !d.warning_detected());
        assert_eq!(d.update(1.0).level, Level::Stable);
        assert_eq!(d.n, 1);
        assert_eq!(d.min, None);
    }

    #[test]
    fn nothing_during_warm_up() {
        let mut d = Ddm::new(DdmParams {
            warm_start: 50,
            ..DdmParams::default()
        })
        .unwrap();
        let mut stream = vec![0.0; 25];
        stream.extend(vec![1.0; 25]);
        let lv = levels(&mut d, &stream);
        assert!(lv.iter().all(|&l| l == Level::Stable));
        assert!(d.min.is_none());
        d.update(1.0);
        assert!(d.min.is_some());
    }

    #[test]
    fn reset_forgets_everything_but_parameters() {
        let fresh = Ddm::new(DdmParams {
            warm_start: 10,
            ..DdmParams::default()
        })
        .unwrap();
        let mut d = fresh.clone();
        levels(&mut d, &errors(500, 250, 10, 30));
        assert_ne!(d, fresh);
        d.reset();
        assert_eq!(d, fresh);
    }

    #[test]
    fn ignores_non_finite_values() {
        let mut a = Ddm::default();
        let mut b = Ddm::default();
        for (i, x) in errors(3000, 1500, 10, 40).into_iter().enumerate() {
            let va = a.update(x);
            if i % 7 == 0 {
                assert_eq!(b.update(f64::NAN).level, Level::Stable);
            }
            assert_eq!(b.update(x), va);
        }
        assert_eq!(a, b);
    }

    /// Through JSON text and back, as the changelog stores detector state:
    /// exact (serde_json's `float_roundtrip` feature is on in this crate).
    fn round_trip(d: &Ddm) -> Ddm {
        let text = serde_json::to_string(d).unwrap();
        let back: Ddm = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, d, "{text}");
        back
    }

    #[test]
    fn serde_round_trip() {
        let mut d = Ddm::default();
        assert_eq!(round_trip(&d), d);
        let stream = errors(3000, 1500, 10, 40);
        for (i, &x) in stream.iter().enumerate() {
            d.update(x);
            if i % 97 == 0 || d.drift_detected() || i == 30 {
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
        let mut d = Ddm::default();
        let before = d.memory_bytes();
        assert_eq!(before, size_of::<Ddm>());
        for x in errors(100_000, 50_000, 5, 30) {
            d.update(x);
            assert_eq!(d.memory_bytes(), before);
        }
    }
}
