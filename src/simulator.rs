//! A deterministic telemetry simulator: healthy models and models that
//! degrade partway through. Drives the demo and the tests.
//!
//! Model names say what they are (`demo/healthy-007`, `demo/drifting-002`),
//! and every event is keyed by its lineage, as producers must.

use std::collections::BTreeMap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::model::{MetricEvent, ModelRef};

/// 2026-01-01T00:00:00Z: where simulated event time starts.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulatorConfig {
    pub models: usize,
    /// How many of `models` degrade (named `drifting-NNN`).
    pub drifting: usize,
    pub seed: u64,
    /// Event time of the first tick (ms).
    pub start_ms: i64,
    /// Event time between two ticks (ms); each model emits one event a tick.
    pub tick_ms: i64,
    /// How the drifting models degrade.
    pub scenario: Scenario,
}

/// How the drifting models degrade.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scenario {
    /// Every other drifting model: accuracy alone, or accuracy and errors.
    #[default]
    Mixed,
    /// Accuracy slides from about 0.93 to 0.72.
    Accuracy,
    /// Accuracy slides and about 40% of inferences fail.
    Errors,
    /// Latency grows fourfold; accuracy holds.
    Latency,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            models: 40,
            drifting: 4,
            seed: 1,
            start_ms: DEFAULT_START_MS,
            tick_ms: 60_000,
            scenario: Scenario::Mixed,
        }
    }
}

/// How a drifting model degrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Degradation {
    /// Accuracy slides from ~0.93 to ~0.72.
    Accuracy,
    /// Accuracy slides and about 40% of inferences fail.
    AccuracyAndErrors,
    /// Latency grows fourfold.
    Latency,
}

#[derive(Debug, Clone)]
struct SimModel {
    model: ModelRef,
    /// Tick at which degradation starts, if the model drifts.
    drift: Option<(u64, Degradation)>,
    rng: SmallRng,
}

/// Generates one event per model per tick.
#[derive(Debug, Clone)]
pub struct Simulator {
    config: SimulatorConfig,
    models: Vec<SimModel>,
    tick: u64,
}

/// Ticks over which a drifting model degrades fully.
const DEGRADE_TICKS: f64 = 15.0;

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        let drifting = config.drifting.min(config.models);
        let models = (0..config.models)
            .map(|i| {
                let mut rng = SmallRng::seed_from_u64(
                    config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64,
                );
                let (name, drift) = if i < drifting {
                    let start = rng.gen_range(30..90);
                    let how = match config.scenario {
                        Scenario::Mixed if i % 2 == 0 => Degradation::Accuracy,
                        Scenario::Mixed => Degradation::AccuracyAndErrors,
                        Scenario::Accuracy => Degradation::Accuracy,
                        Scenario::Errors => Degradation::AccuracyAndErrors,
                        Scenario::Latency => Degradation::Latency,
                    };
                    (format!("drifting-{i:03}"), Some((start, how)))
                } else {
                    (format!("healthy-{:03}", i - drifting), None)
                };
                SimModel {
                    model: ModelRef::new("demo", &name, Some("v1")),
                    drift,
                    rng,
                }
            })
            .collect();
        Simulator {
            config,
            models,
            tick: 0,
        }
    }

    /// Lineages of the models that drift.
    pub fn drifting_models(&self) -> Vec<String> {
        self.models
            .iter()
            .filter(|m| m.drift.is_some())
            .map(|m| m.model.lineage())
            .collect()
    }

    /// Lineages of the healthy models.
    pub fn healthy_models(&self) -> Vec<String> {
        self.models
            .iter()
            .filter(|m| m.drift.is_none())
            .map(|m| m.model.lineage())
            .collect()
    }

    /// A new version of `lineage` is deployed (a retrain succeeded): from
    /// the next tick the model sends as `version`, healthy. False when the
    /// simulator has no such model.
    pub fn deploy(&mut self, lineage: &str, version: &str) -> bool {
        let Some(m) = self
            .models
            .iter_mut()
            .find(|m| m.model.lineage() == lineage)
        else {
            return false;
        };
        m.model.version = Some(version.to_owned());
        m.drift = None;
        true
    }

    /// The next tick's events, one per model, in model order.
    pub fn tick(&mut self) -> Vec<MetricEvent> {
        let tick = self.tick;
        self.tick += 1;
        let timestamp = self.config.start_ms + tick as i64 * self.config.tick_ms;
        self.models
            .iter_mut()
            .map(|m| {
                let progress = match m.drift {
                    Some((start, _)) if tick >= start => {
                        ((tick - start) as f64 / DEGRADE_TICKS).min(1.0)
                    }
                    _ => 0.0,
                };
                let error_probability = match m.drift {
                    Some((_, Degradation::AccuracyAndErrors)) => 0.4 * progress,
                    _ => 0.001,
                };
                let (accuracy_drop, latency_factor) = match m.drift {
                    Some((_, Degradation::Latency)) => (0.0, 1.0 + 3.0 * progress),
                    _ => (0.21 * progress, 1.0),
                };
                let z: f64 = m.rng.sample(StandardNormal);
                let accuracy = (0.93 - accuracy_drop + 0.015 * z).clamp(0.0, 1.0);
                let z: f64 = m.rng.sample(StandardNormal);
                let latency = 40.0 * latency_factor * f64::exp(0.2 * z);
                let failed = m.rng.gen_bool(error_probability);
                let mut metrics = BTreeMap::new();
                metrics.insert("accuracy".to_owned(), round4(accuracy));
                metrics.insert("f1_score".to_owned(), round4((accuracy - 0.02).max(0.0)));
                metrics.insert("latency_ms".to_owned(), round4(latency));
                MetricEvent {
                    model: m.model.clone(),
                    timestamp,
                    metrics,
                    error: failed
                        .then(|| "inference failed: upstream feature store timeout".to_owned()),
                    tags: BTreeMap::from([("region".to_owned(), "eu-west-1".to_owned())]),
                }
            })
            .collect()
    }
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events_and_names_say_what_models_do() {
        let cfg = SimulatorConfig {
            models: 5,
            drifting: 2,
            ..Default::default()
        };
        let mut a = Simulator::new(cfg);
        let mut b = Simulator::new(cfg);
        for _ in 0..50 {
            assert_eq!(a.tick(), b.tick());
        }
        assert_eq!(
            a.drifting_models(),
            vec!["demo/drifting-000", "demo/drifting-001"]
        );
        assert_eq!(a.healthy_models().len(), 3);
        assert_eq!(a.healthy_models()[0], "demo/healthy-000");
    }

    #[test]
    fn a_deployed_version_is_sent_healthy_from_the_next_tick() {
        let mut sim = Simulator::new(SimulatorConfig {
            models: 2,
            drifting: 1,
            ..Default::default()
        });
        for _ in 0..150 {
            sim.tick();
        }
        assert!(sim.deploy("demo/drifting-000", "v2"));
        assert!(!sim.deploy("demo/unknown", "v2"));
        let after: Vec<MetricEvent> = (0..50).flat_map(|_| sim.tick()).collect();
        let v2: Vec<&MetricEvent> = after
            .iter()
            .filter(|e| e.model.name == "drifting-000")
            .collect();
        assert!(v2.iter().all(|e| e.model.version.as_deref() == Some("v2")));
        let mean = v2.iter().filter_map(|e| e.value("accuracy")).sum::<f64>() / v2.len() as f64;
        assert!(mean > 0.9, "healthy again: {mean}");
        assert!(sim.drifting_models().is_empty());
    }

    #[test]
    fn drifting_models_degrade_and_healthy_ones_do_not() {
        let mut sim = Simulator::new(SimulatorConfig {
            models: 3,
            drifting: 1,
            ..Default::default()
        });
        let events: Vec<MetricEvent> = (0..200).flat_map(|_| sim.tick()).collect();
        let mean_late = |name: &str| {
            let v: Vec<f64> = events
                .iter()
                .filter(|e| e.model.name == name && e.timestamp >= DEFAULT_START_MS + 150 * 60_000)
                .filter_map(|e| e.value("accuracy"))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean_late("drifting-000") < 0.75);
        assert!(mean_late("healthy-000") > 0.9);
    }
}
