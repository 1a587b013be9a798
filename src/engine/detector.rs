//! What a rule's detector makes of each closed window: a fixed threshold,
//! or one of the sequential detectors of [`crate::detect`] with the
//! reference (baseline) it judges against.
//!
//! The sequential detectors see one number per closed window, the window's
//! aggregate; a count window of size 1 feeds them every raw sample. CUSUM,
//! EWMA and Shewhart charts need the in-control mean and standard deviation:
//! they run in σ units on values standardised by a [`Baseline`] (fixed in
//! the configuration, learned during a warm-up of each model version, or a
//! trailing window of in-control values). The others learn their own
//! reference from the stream.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::detect::adwin::Adwin;
use crate::detect::cusum::Cusum;
use crate::detect::ddm::Ddm;
use crate::detect::distribution::DistributionDrift;
use crate::detect::ewma::Ewma;
use crate::detect::hddm::HddmA;
use crate::detect::page_hinkley::PageHinkley;
use crate::detect::shewhart::Shewhart;
use crate::detect::{Detector, Level, Verdict};

/// How a rule judges its window aggregates.
#[derive(Debug, Clone, PartialEq)]
pub enum DetectorSpec {
    /// Drift when the aggregate is below `below` or above `above` (either or
    /// both; both make a band the value must stay inside).
    Threshold {
        below: Option<f64>,
        above: Option<f64>,
    },
    /// A sequential detector, in its initial state, and its reference.
    Sequential(Box<SequentialSpec>),
}

/// A sequential detector as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct SequentialSpec {
    /// The detector in its initial state; every model version starts from a
    /// copy (so the parameters are validated once, at configuration time).
    pub prototype: SequentialDetector,
    /// The reference of a chart; `None` for self-referencing detectors.
    pub baseline: Option<BaselineSpec>,
}

/// One of the sequential detectors, with its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequentialDetector {
    Cusum(Cusum),
    Ewma(Ewma),
    Shewhart(Shewhart),
    PageHinkley(PageHinkley),
    Adwin(Box<Adwin>),
    Ddm(Ddm),
    HddmA(HddmA),
    Distribution(Box<DistributionDrift>),
}

impl SequentialDetector {
    /// The detector's name as it appears in requests and configuration.
    pub fn name(&self) -> &'static str {
        match self {
            SequentialDetector::Cusum(_) => "cusum",
            SequentialDetector::Ewma(_) => "ewma",
            SequentialDetector::Shewhart(_) => "shewhart",
            SequentialDetector::PageHinkley(_) => "page_hinkley",
            SequentialDetector::Adwin(_) => "adwin",
            SequentialDetector::Ddm(_) => "ddm",
            SequentialDetector::HddmA(_) => "hddm_a",
            SequentialDetector::Distribution(_) => "distribution",
        }
    }

    /// Whether the detector is a control chart that needs a [`Baseline`].
    pub fn needs_baseline(&self) -> bool {
        matches!(
            self,
            SequentialDetector::Cusum(_)
                | SequentialDetector::Ewma(_)
                | SequentialDetector::Shewhart(_)
        )
    }

    fn as_detector(&mut self) -> &mut dyn Detector {
        match self {
            SequentialDetector::Cusum(d) => d,
            SequentialDetector::Ewma(d) => d,
            SequentialDetector::Shewhart(d) => d,
            SequentialDetector::PageHinkley(d) => d,
            SequentialDetector::Adwin(d) => d.as_mut(),
            SequentialDetector::Ddm(d) => d,
            SequentialDetector::HddmA(d) => d,
            SequentialDetector::Distribution(d) => d.as_mut(),
        }
    }

    fn memory(&self) -> usize {
        let inner = match self {
            SequentialDetector::Cusum(d) => d.memory_bytes(),
            SequentialDetector::Ewma(d) => d.memory_bytes(),
            SequentialDetector::Shewhart(d) => d.memory_bytes(),
            SequentialDetector::PageHinkley(d) => d.memory_bytes(),
            SequentialDetector::Adwin(d) => d.memory_bytes(),
            SequentialDetector::Ddm(d) => d.memory_bytes(),
            SequentialDetector::HddmA(d) => d.memory_bytes(),
            SequentialDetector::Distribution(d) => d.memory_bytes(),
        };
        // The enum itself is counted by its owner; boxed variants add their box.
        match self {
            SequentialDetector::Adwin(_) | SequentialDetector::Distribution(_) => inner,
            _ => inner.saturating_sub(std::mem::size_of::<Self>()),
        }
    }
}

/// Where a chart's in-control mean and standard deviation come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BaselineSpec {
    /// Given in the configuration.
    Fixed { mean: f64, std: f64 },
    /// Learned from the first `windows` window aggregates of each model
    /// version, then fixed until the next version.
    Warmup { windows: u32 },
    /// The last `windows` aggregates judged stable: the reference follows
    /// slow, benign change (and so does not flag it).
    Trailing { windows: u32 },
}

/// A baseline's state for one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    Fixed {
        mean: f64,
        std: f64,
    },
    /// Welford's running mean and sum of squared deviations.
    Learning {
        target: u32,
        n: u32,
        mean: f64,
        m2: f64,
    },
    Learned {
        mean: f64,
        std: f64,
    },
    Trailing {
        capacity: u32,
        values: VecDeque<f64>,
    },
}

impl Baseline {
    fn new(spec: BaselineSpec) -> Self {
        match spec {
            BaselineSpec::Fixed { mean, std } => Baseline::Fixed { mean, std },
            BaselineSpec::Warmup { windows } => Baseline::Learning {
                target: windows,
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            BaselineSpec::Trailing { windows } => Baseline::Trailing {
                capacity: windows,
                values: VecDeque::new(),
            },
        }
    }

    /// The mean and standard deviation, once known.
    pub fn reference(&self) -> Option<(f64, f64)> {
        match self {
            Baseline::Fixed { mean, std } | Baseline::Learned { mean, std } => Some((*mean, *std)),
            Baseline::Learning { .. } => None,
            Baseline::Trailing { capacity, values } => {
                if values.len() < *capacity as usize {
                    return None;
                }
                let n = values.len() as f64;
                let mean = values.iter().sum::<f64>() / n;
                let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
                Some((mean, var.sqrt()))
            }
        }
    }

    /// `x` in σ units of the reference; `None` while it is being learned.
    fn standardize(&self, x: f64) -> Option<f64> {
        let (mean, std) = self.reference()?;
        // A perfectly constant reference would make any change infinite.
        let floor = f64::EPSILON.sqrt() * mean.abs().max(1.0);
        Some((x - mean) / std.max(floor))
    }

    /// Takes `x` into the reference where it belongs: every value while
    /// learning, values judged stable into a trailing window.
    fn absorb(&mut self, x: f64, level: Level) {
        match self {
            Baseline::Fixed { .. } | Baseline::Learned { .. } => {}
            Baseline::Learning {
                target,
                n,
                mean,
                m2,
            } => {
                *n += 1;
                let delta = x - *mean;
                *mean += delta / f64::from(*n);
                *m2 += delta * (x - *mean);
                if *n >= *target {
                    let std = if *n > 1 {
                        (*m2 / f64::from(*n - 1)).sqrt()
                    } else {
                        0.0
                    };
                    *self = Baseline::Learned { mean: *mean, std };
                }
            }
            Baseline::Trailing { capacity, values } => {
                let full = values.len() >= *capacity as usize;
                if !full || level == Level::Stable {
                    values.push_back(x);
                    while values.len() > *capacity as usize {
                        values.pop_front();
                    }
                }
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Baseline::Trailing { values, .. } => values.capacity() * std::mem::size_of::<f64>(),
            _ => 0,
        }
    }
}

/// A rule's detector state for one model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorState {
    /// The threshold detector keeps no state.
    Threshold,
    /// Boxed: most rules are thresholds, and a model's rules should not
    /// all be the size of the largest detector.
    Sequential(Box<SequentialState>),
}

/// The state of a sequential detector and of the baseline that
/// standardises its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialState {
    pub detector: SequentialDetector,
    pub baseline: Option<Baseline>,
}

/// What a detector made of one window aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Judgement {
    pub level: Level,
    /// The detector's statistic (the aggregate itself for a threshold).
    pub statistic: Option<f64>,
    /// What the statistic was compared with: for a threshold, the bound
    /// that was crossed (or the nearer one when none was).
    pub threshold: Option<f64>,
    /// Which way a threshold was crossed.
    pub direction: Option<Direction>,
    /// The reference is still being learned: the value fed it instead.
    pub learning: bool,
}

/// Which side of a threshold a breach was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Below,
    Above,
}

impl DetectorSpec {
    /// The detector's name as it appears in requests.
    pub fn name(&self) -> &'static str {
        match self {
            DetectorSpec::Threshold { .. } => "threshold",
            DetectorSpec::Sequential(spec) => spec.prototype.name(),
        }
    }

    /// The state a new model version starts with.
    pub fn initial_state(&self) -> DetectorState {
        match self {
            DetectorSpec::Threshold { .. } => DetectorState::Threshold,
            DetectorSpec::Sequential(spec) => {
                DetectorState::Sequential(Box::new(SequentialState {
                    detector: spec.prototype.clone(),
                    baseline: spec.baseline.map(Baseline::new),
                }))
            }
        }
    }

    /// Judges a threshold (stateless); `None` for sequential detectors.
    fn threshold(&self, value: f64) -> Option<Judgement> {
        let DetectorSpec::Threshold { below, above } = *self else {
            return None;
        };
        let breach = if let Some(b) = below.filter(|b| value < *b) {
            Some((b, Direction::Below))
        } else {
            above.filter(|a| value > *a).map(|a| (a, Direction::Above))
        };
        let nearer = match (below, above) {
            (Some(b), Some(a)) => Some(if (value - b).abs() <= (a - value).abs() {
                b
            } else {
                a
            }),
            (b, a) => b.or(a),
        };
        Some(Judgement {
            level: if breach.is_some() {
                Level::Drift
            } else {
                Level::Stable
            },
            statistic: Some(value),
            threshold: breach.map(|(t, _)| t).or(nearer),
            direction: breach.map(|(_, d)| d),
            learning: false,
        })
    }
}

impl DetectorState {
    /// Judges one window aggregate under `spec` and updates the state.
    pub fn judge(&mut self, spec: &DetectorSpec, value: f64) -> Judgement {
        if let Some(judgement) = spec.threshold(value) {
            return judgement;
        }
        match self {
            DetectorState::Threshold => Judgement {
                level: Level::Stable,
                statistic: None,
                threshold: None,
                direction: None,
                learning: false,
            },
            DetectorState::Sequential(state) => {
                let SequentialState { detector, baseline } = &mut **state;
                judge(detector, baseline, value)
            }
        }
    }

    /// Bytes this state occupies beyond its own inline size: bounded for
    /// every detector (see `docs/detectors.md`).
    pub fn heap_bytes(&self) -> usize {
        match self {
            DetectorState::Threshold => 0,
            DetectorState::Sequential(state) => {
                std::mem::size_of::<SequentialState>()
                    + state.detector.memory()
                    + state.baseline.as_ref().map_or(0, Baseline::heap_bytes)
            }
        }
    }
}

fn judge(
    detector: &mut SequentialDetector,
    baseline: &mut Option<Baseline>,
    value: f64,
) -> Judgement {
    let input = match baseline {
        Some(b) => match b.standardize(value) {
            Some(z) => z,
            None => {
                b.absorb(value, Level::Stable);
                return Judgement {
                    level: Level::Stable,
                    statistic: None,
                    threshold: None,
                    direction: None,
                    learning: true,
                };
            }
        },
        None => value,
    };
    let Verdict {
        level,
        statistic,
        threshold,
    } = detector.as_detector().update(input);
    if let Some(b) = baseline {
        b.absorb(value, level);
    }
    Judgement {
        level,
        statistic: statistic.is_finite().then_some(statistic),
        threshold,
        direction: None,
        learning: false,
    }
}

/// A configured detector and its reference as one [`Detector`], so that
/// `driftwatch evaluate` runs exactly what a rule would.
#[derive(Debug, Clone)]
pub struct RuleDetector {
    spec: DetectorSpec,
    state: DetectorState,
}

impl RuleDetector {
    pub fn new(spec: DetectorSpec) -> Self {
        let state = spec.initial_state();
        RuleDetector { spec, state }
    }
}

impl Detector for RuleDetector {
    fn update(&mut self, x: f64) -> Verdict {
        let j = self.state.judge(&self.spec, x);
        Verdict {
            level: j.level,
            statistic: j.statistic.unwrap_or(f64::NAN),
            threshold: j.threshold,
        }
    }

    fn reset(&mut self) {
        self.state = self.spec.initial_state();
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<DetectorState>() + self.state.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::cusum::Cusum;

    #[test]
    fn threshold_band_breaches_on_either_side_only() {
        let band = DetectorSpec::Threshold {
            below: Some(0.8),
            above: Some(0.95),
        };
        let mut state = band.initial_state();
        let mut level = |v| state.judge(&band, v);
        assert_eq!(level(0.9).level, Level::Stable);
        assert_eq!(level(0.8).level, Level::Stable, "the bound is acceptable");
        let low = level(0.7);
        assert_eq!(
            (low.level, low.threshold, low.direction),
            (Level::Drift, Some(0.8), Some(Direction::Below))
        );
        let high = level(0.99);
        assert_eq!(
            (high.level, high.threshold, high.direction),
            (Level::Drift, Some(0.95), Some(Direction::Above))
        );
        let above_only = DetectorSpec::Threshold {
            below: None,
            above: Some(200.0),
        };
        assert_eq!(
            above_only.initial_state().judge(&above_only, -1e9).level,
            Level::Stable
        );
    }

    fn cusum(baseline: BaselineSpec) -> DetectorSpec {
        DetectorSpec::Sequential(Box::new(SequentialSpec {
            prototype: SequentialDetector::Cusum(Cusum::new(0.0, 1.0, 0.5, 4.0).expect("valid")),
            baseline: Some(baseline),
        }))
    }

    #[test]
    fn warmup_baseline_learns_then_standardizes() {
        let spec = cusum(BaselineSpec::Warmup { windows: 4 });
        let mut state = spec.initial_state();
        for v in [10.0, 12.0, 10.0, 12.0] {
            let j = state.judge(&spec, v);
            assert!(j.learning && j.level == Level::Stable);
        }
        let DetectorState::Sequential(sequential) = &state else {
            panic!("sequential state expected");
        };
        let Some(b) = &sequential.baseline else {
            panic!("baseline expected");
        };
        let (mean, std) = b.reference().expect("learned");
        assert_eq!(mean, 11.0);
        assert!((std - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        // Each value 2σ above the mean adds 2 - k = 1.5 to C+: drift on the third.
        let z2 = mean + 2.0 * std;
        let levels: Vec<Level> = (0..3).map(|_| state.judge(&spec, z2).level).collect();
        assert_eq!(levels, vec![Level::Stable, Level::Stable, Level::Drift]);
    }

    #[test]
    fn trailing_baseline_keeps_only_stable_values() {
        let spec = cusum(BaselineSpec::Trailing { windows: 3 });
        let mut state = spec.initial_state();
        for v in [1.0, 2.0, 3.0] {
            assert!(state.judge(&spec, v).learning);
        }
        // Far out: judged (drift eventually), and never enters the reference.
        for _ in 0..3 {
            state.judge(&spec, 100.0);
        }
        let DetectorState::Sequential(sequential) = &state else {
            panic!("sequential state expected");
        };
        let Some(b) = &sequential.baseline else {
            panic!("baseline expected");
        };
        assert_eq!(b.reference().map(|r| r.0), Some(2.0));
    }

    #[test]
    fn detector_state_survives_json_exactly() {
        let spec = cusum(BaselineSpec::Warmup { windows: 3 });
        let mut state = spec.initial_state();
        for v in [0.1, 0.7, 0.30000000000000004, 0.9] {
            state.judge(&spec, v);
        }
        let json = serde_json::to_string(&state).expect("serializes");
        let back: DetectorState = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, state);
    }
}
