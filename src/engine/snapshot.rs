//! Serializable snapshots of model state, for the changelog topic. Pure:
//! conversion only; encoding lives in the codec (schemas/model_snapshot_v*.avsc).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::detector::{Breach, Direction};
use super::policy::{Policy, RuleSpec};
use super::state::{Evaluation, InFlight, ModelCounters, ModelState, RuleState};
use super::window::{WindowResult, WindowState};
use crate::model::{Action, StatusKind};

/// The snapshot schema version this build writes.
pub const SNAPSHOT_VERSION: u32 = 1;

/// A model's state as stored in the changelog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSnapshot {
    pub project: String,
    pub name: String,
    pub version: Option<String>,
    pub retired_versions: Vec<String>,
    pub policy: String,
    /// Next input offset when taken: records below are already reflected.
    pub input_offset: i64,
    pub rules: Vec<RuleSnapshot>,
    pub in_flight: Option<InFlightSnapshot>,
    pub backoff_until: Option<i64>,
    pub last_event_at: Option<i64>,
    pub counters: BTreeMap<String, i64>,
}

/// One rule's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    pub rule: String,
    pub spec: String,
    pub window_start: Option<i64>,
    pub window_last: i64,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
    pub consecutive: i64,
    pub cooldown_until: Option<i64>,
    pub last: Option<EvaluationSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSnapshot {
    pub start: i64,
    pub end: i64,
    pub value: f64,
    pub samples: i64,
    pub breach_threshold: Option<f64>,
    pub breach_below: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightSnapshot {
    pub request_id: String,
    pub action: String,
    pub issued_at: i64,
    pub last_status: Option<String>,
}

/// A rule definition's fingerprint: state survives only an unchanged rule.
pub fn rule_fingerprint(spec: &RuleSpec) -> String {
    format!("{spec:?}")
}

impl ModelSnapshot {
    /// Captures `model` (governed by rules `specs`) at input offset `input_offset`.
    pub fn capture(model: &ModelState, specs: &[RuleSpec], input_offset: i64) -> Self {
        let c = &model.counters;
        ModelSnapshot {
            project: model.project.clone(),
            name: model.name.clone(),
            version: model.version.clone(),
            retired_versions: model.retired_versions.iter().cloned().collect(),
            policy: model.policy.clone(),
            input_offset,
            rules: specs
                .iter()
                .zip(&model.rules)
                .map(|(s, r)| capture_rule(s, r))
                .collect(),
            in_flight: model.in_flight.as_ref().map(|f| InFlightSnapshot {
                request_id: f.request_id.clone(),
                action: f.action.as_str().to_owned(),
                issued_at: f.issued_at,
                last_status: f.last_status.map(|s| status_name(s).to_owned()),
            }),
            backoff_until: model.backoff_until,
            last_event_at: model.last_event_at,
            counters: BTreeMap::from([
                ("events_applied".to_owned(), c.events_applied as i64),
                ("late_samples".to_owned(), c.late_samples as i64),
                ("overflow_samples".to_owned(), c.overflow_samples as i64),
                ("requests".to_owned(), c.requests as i64),
                (
                    "suppressed_while_in_flight".to_owned(),
                    c.suppressed_while_in_flight as i64,
                ),
                ("request_timeouts".to_owned(), c.request_timeouts as i64),
            ]),
        }
    }

    /// The lineage `project/name`.
    pub fn lineage(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }

    /// Rebuilds the model under `policy` (the current configuration). Rule
    /// state is kept for rules whose definition is unchanged; other rules
    /// start fresh, and so do all rules if the policy itself changed.
    pub fn restore(&self, policy: &Policy) -> ModelState {
        let mut model = ModelState::new(&self.project, &self.name, &policy.pattern, &policy.rules);
        model.version = self.version.clone();
        model.retired_versions = self
            .retired_versions
            .iter()
            .cloned()
            .collect::<VecDeque<_>>();
        if self.policy == policy.pattern {
            for (spec, state) in policy.rules.iter().zip(model.rules.iter_mut()) {
                let fingerprint = rule_fingerprint(spec);
                if let Some(saved) = self
                    .rules
                    .iter()
                    .find(|r| r.rule == spec.name && r.spec == fingerprint)
                {
                    if let Some(restored) = restore_rule(spec, saved) {
                        *state = restored;
                    }
                }
            }
        }
        model.in_flight = self.in_flight.as_ref().and_then(|f| {
            Some(InFlight {
                request_id: f.request_id.clone(),
                action: parse_action(&f.action)?,
                issued_at: f.issued_at,
                last_status: f.last_status.as_deref().and_then(parse_status),
            })
        });
        model.backoff_until = self.backoff_until;
        model.last_event_at = self.last_event_at;
        let get = |k: &str| self.counters.get(k).copied().unwrap_or(0).max(0) as u64;
        model.counters = ModelCounters {
            events_applied: get("events_applied"),
            late_samples: get("late_samples"),
            overflow_samples: get("overflow_samples"),
            requests: get("requests"),
            suppressed_while_in_flight: get("suppressed_while_in_flight"),
            request_timeouts: get("request_timeouts"),
        };
        model.input_offset = self.input_offset;
        model
    }
}

fn capture_rule(spec: &RuleSpec, rule: &RuleState) -> RuleSnapshot {
    let (window_start, window_last, values, timestamps) = match &rule.window {
        WindowState::Count {
            first_ts,
            last_ts,
            values,
            ..
        } => (Some(*first_ts), *last_ts, values.clone(), Vec::new()),
        WindowState::Tumbling { start, values, .. } => (*start, 0, values.clone(), Vec::new()),
        WindowState::Sliding {
            next_end, samples, ..
        } => (
            *next_end,
            0,
            samples.iter().map(|(_, v)| *v).collect(),
            samples.iter().map(|(t, _)| *t).collect(),
        ),
    };
    RuleSnapshot {
        rule: spec.name.clone(),
        spec: rule_fingerprint(spec),
        window_start,
        window_last,
        values,
        timestamps,
        consecutive: i64::from(rule.consecutive),
        cooldown_until: rule.cooldown_until,
        last: rule.last.map(|e| EvaluationSnapshot {
            start: e.window.start,
            end: e.window.end,
            value: e.window.value,
            samples: e.window.samples as i64,
            breach_threshold: e.breach.map(|b| b.threshold),
            breach_below: e.breach.map(|b| b.direction == Direction::Below),
        }),
    }
}

/// `None` when the saved state does not fit the rule's window kind.
fn restore_rule(spec: &RuleSpec, saved: &RuleSnapshot) -> Option<RuleState> {
    let mut state = RuleState::new(spec);
    match &mut state.window {
        WindowState::Count {
            first_ts,
            last_ts,
            values,
            ..
        } => {
            *first_ts = saved.window_start.unwrap_or(0);
            *last_ts = saved.window_last;
            values.clone_from(&saved.values);
        }
        WindowState::Tumbling { start, values, .. } => {
            *start = saved.window_start;
            values.clone_from(&saved.values);
        }
        WindowState::Sliding {
            next_end, samples, ..
        } => {
            if saved.timestamps.len() != saved.values.len() {
                return None;
            }
            *next_end = saved.window_start;
            *samples = saved
                .timestamps
                .iter()
                .copied()
                .zip(saved.values.iter().copied())
                .collect();
        }
    }
    state.consecutive = u32::try_from(saved.consecutive.max(0)).unwrap_or(u32::MAX);
    state.cooldown_until = saved.cooldown_until;
    state.last = saved.last.as_ref().map(|e| Evaluation {
        window: WindowResult {
            start: e.start,
            end: e.end,
            value: e.value,
            samples: e.samples.max(0) as usize,
        },
        breach: e
            .breach_threshold
            .zip(e.breach_below)
            .map(|(threshold, below)| Breach {
                threshold,
                direction: if below {
                    Direction::Below
                } else {
                    Direction::Above
                },
            }),
    });
    Some(state)
}

fn parse_action(s: &str) -> Option<Action> {
    match s {
        "FINE_TUNE" => Some(Action::FineTune),
        "FULL_RETRAIN" => Some(Action::FullRetrain),
        _ => None,
    }
}

fn status_name(s: StatusKind) -> &'static str {
    match s {
        StatusKind::Accepted => "ACCEPTED",
        StatusKind::Started => "STARTED",
        StatusKind::Succeeded => "SUCCEEDED",
        StatusKind::Failed => "FAILED",
    }
}

fn parse_status(s: &str) -> Option<StatusKind> {
    match s {
        "ACCEPTED" => Some(StatusKind::Accepted),
        "STARTED" => Some(StatusKind::Started),
        "SUCCEEDED" => Some(StatusKind::Succeeded),
        "FAILED" => Some(StatusKind::Failed),
        _ => None,
    }
}
