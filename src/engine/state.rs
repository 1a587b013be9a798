//! Keyed state: per rule, per model, per partition.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use super::detector::Breach;
use super::policy::RuleSpec;
use super::window::{WindowResult, WindowState};
use crate::model::{Action, StatusKind};

/// How many superseded versions a model remembers to ignore stragglers.
const REMEMBERED_VERSIONS: usize = 4;

/// The last evaluated window of a rule, for inspection and evidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    pub window: WindowResult,
    pub breach: Option<Breach>,
}

/// State of one rule for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleState {
    pub window: WindowState,
    /// Consecutive breaching windows so far.
    pub consecutive: u32,
    /// Event time before which the rule may not fire again.
    pub cooldown_until: Option<i64>,
    pub last: Option<Evaluation>,
}

impl RuleState {
    pub fn new(spec: &RuleSpec) -> Self {
        RuleState {
            window: WindowState::new(spec.window),
            consecutive: 0,
            cooldown_until: None,
            last: None,
        }
    }

    /// Records a closed window's verdict; true when the rule is ready to fire
    /// (confirmed and not cooling down).
    pub fn evaluate(&mut self, spec: &RuleSpec, window: WindowResult) -> bool {
        let breach = spec.detector.evaluate(window.value);
        self.last = Some(Evaluation { window, breach });
        if breach.is_some() {
            self.consecutive = self.consecutive.saturating_add(1);
        } else {
            self.consecutive = 0;
        }
        let cooled = self.cooldown_until.is_none_or(|until| window.end >= until);
        breach.is_some() && self.consecutive >= spec.confirm && cooled
    }
}

/// A request that is out and not yet resolved by the coordinator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InFlight {
    pub request_id: String,
    pub action: Action,
    /// Event time the request was triggered at.
    pub issued_at: i64,
    pub last_status: Option<StatusKind>,
}

/// Counters per model, for inspection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelCounters {
    pub events_applied: u64,
    pub late_samples: u64,
    /// Samples dropped because a window was full.
    pub overflow_samples: u64,
    pub requests: u64,
    pub suppressed_while_in_flight: u64,
    pub request_timeouts: u64,
}

/// All state of one model (lineage `project/name`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelState {
    pub lineage: String,
    pub project: String,
    pub name: String,
    pub version: Option<String>,
    pub retired_versions: VecDeque<String>,
    /// The pattern of the policy the rules below belong to.
    pub policy: String,
    pub rules: Vec<RuleState>,
    pub in_flight: Option<InFlight>,
    /// After a FAILED request: event time before which no new request fires.
    pub backoff_until: Option<i64>,
    pub last_event_at: Option<i64>,
    pub counters: ModelCounters,
    /// Input offset up to which this state is durable in the changelog:
    /// records of this model below it are already reflected and skipped.
    pub input_offset: i64,
}

impl ModelState {
    pub fn new(project: &str, name: &str, policy: &str, rules: &[RuleSpec]) -> Self {
        ModelState {
            lineage: format!("{project}/{name}"),
            project: project.to_owned(),
            name: name.to_owned(),
            version: None,
            retired_versions: VecDeque::new(),
            policy: policy.to_owned(),
            rules: rules.iter().map(RuleState::new).collect(),
            in_flight: None,
            backoff_until: None,
            last_event_at: None,
            counters: ModelCounters::default(),
            input_offset: 0,
        }
    }

    /// Starts `version` fresh: new rule state, the old version retired.
    pub fn start_version(&mut self, version: Option<String>, rules: &[RuleSpec]) {
        if let Some(old) = self.version.take() {
            if Some(&old) != version.as_ref() {
                self.retired_versions.push_back(old);
                while self.retired_versions.len() > REMEMBERED_VERSIONS {
                    self.retired_versions.pop_front();
                }
            }
        }
        self.version = version;
        self.rules = rules.iter().map(RuleState::new).collect();
    }

    /// A JSON-friendly view for the HTTP API.
    pub fn view(&self, specs: &[RuleSpec]) -> ModelView {
        ModelView {
            model: self.lineage.clone(),
            version: self.version.clone(),
            policy: self.policy.clone(),
            last_event_at: self.last_event_at,
            in_flight: self.in_flight.clone(),
            backoff_until: self.backoff_until,
            counters: self.counters.clone(),
            rules: specs
                .iter()
                .zip(&self.rules)
                .map(|(spec, state)| {
                    (
                        spec.name.clone(),
                        RuleView {
                            metric: spec.metric.clone(),
                            aggregate: spec.aggregate.as_str(),
                            detector: spec.detector.name(),
                            confirm: spec.confirm,
                            consecutive_breaches: state.consecutive,
                            cooldown_until: state.cooldown_until,
                            buffered_samples: state.window.buffered(),
                            last_window: state.last,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// What `GET /models/{project}/{name}` returns.
#[derive(Debug, Clone, Serialize)]
pub struct ModelView {
    pub model: String,
    pub version: Option<String>,
    pub policy: String,
    pub last_event_at: Option<i64>,
    pub in_flight: Option<InFlight>,
    pub backoff_until: Option<i64>,
    pub counters: ModelCounters,
    pub rules: BTreeMap<String, RuleView>,
}

/// One rule's status inside [`ModelView`].
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub metric: String,
    pub aggregate: &'static str,
    pub detector: &'static str,
    pub confirm: u32,
    pub consecutive_breaches: u32,
    pub cooldown_until: Option<i64>,
    pub buffered_samples: usize,
    pub last_window: Option<Evaluation>,
}

/// The keyed state of one input partition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionState {
    pub models: BTreeMap<String, ModelState>,
}

impl PartitionState {
    pub fn model(&self, lineage: &str) -> Option<&ModelState> {
        self.models.get(lineage)
    }
}
