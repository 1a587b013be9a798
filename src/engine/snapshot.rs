//! Serializable snapshots of model state, for the changelog topic. Pure:
//! conversion only; encoding lives in the codec (schemas/model_snapshot_v*.avsc).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::alert::{AlertState, CompositeState};
use super::detector::{DetectorSpec, DetectorState, Direction, Judgement};
use super::policy::Aggregate;
use super::policy::{CompositeSpec, Policy, RuleSpec, SilenceSpec};
use super::state::{Evaluation, InFlight, ModelCounters, ModelState, RuleState};
use super::window::{count_window_kept, Pane, WindowResult, WindowState};
use crate::detect::Level;
use crate::model::{Action, StatusKind};

/// The snapshot schema version this build writes.
pub const SNAPSHOT_VERSION: u32 = 4;

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
    pub composites: Vec<CompositeSnapshot>,
    pub pending: Vec<PendingSnapshot>,
    pub in_flight: Option<InFlightSnapshot>,
    pub backoff_until: Option<i64>,
    pub last_event_at: Option<i64>,
    /// Versions 1 to 3 (version 4 writes it empty and fills `counts`).
    pub counters: BTreeMap<String, i64>,
    /// Since version 3 (empty when reading older ones).
    #[serde(default)]
    pub silences: Vec<SilenceSnapshot>,
    /// Since version 3: the latest event time behind the watermark (older
    /// versions: the latest event time).
    #[serde(default)]
    pub last_heard_at: Option<i64>,
    /// Since version 4: the counters as fields.
    #[serde(default)]
    pub counts: Option<CountersSnapshot>,
}

/// The per-model counters (version 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersSnapshot {
    pub events_applied: i64,
    pub late_events: i64,
    pub late_samples: i64,
    pub warning_windows: i64,
    pub overflow_samples: i64,
    pub requests: i64,
    pub suppressed_while_in_flight: i64,
    pub request_timeouts: i64,
    pub future_events: i64,
}

/// One silence rule's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceSnapshot {
    /// Versions 1 to 3 (version 4 writes it empty and keys by `id`).
    pub name: String,
    /// Versions 1 to 3: the definition's fingerprint.
    pub spec: String,
    pub silent_since: Option<i64>,
    pub cooldown_until: Option<i64>,
    /// Since version 4: the definition's id.
    #[serde(default)]
    pub id: i64,
}

/// One rule's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleSnapshot {
    /// Versions 1 to 3 (version 4 writes it empty and keys by `id`).
    pub rule: String,
    /// Versions 1 to 3: the definition's fingerprint.
    pub spec: String,
    pub window_start: Option<i64>,
    pub window_last: i64,
    /// Versions 1 to 3: every sample held. Version 4: a 95th percentile's
    /// samples only.
    pub values: Vec<f64>,
    /// Sliding windows: the event time of each of `values`.
    pub timestamps: Vec<i64>,
    pub consecutive: i64,
    pub cooldown_until: Option<i64>,
    pub recent: i64,
    pub in_alarm: bool,
    pub calm: i64,
    pub fired_in_episode: bool,
    pub detector_state: Option<String>,
    pub last: Option<EvaluationSnapshot>,
    /// Since version 4: the definition's id.
    #[serde(default)]
    pub id: i64,
    /// Since version 4: the window's statistics (`None` in older versions,
    /// whose `values` hold every sample).
    #[serde(default)]
    pub window: Option<WindowSnapshot>,
}

/// A window's statistics (version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSnapshot {
    /// Count and tumbling windows: samples in the open window.
    pub count: i64,
    /// Count and tumbling windows: the running figure of its aggregate.
    pub figure: f64,
    /// Sliding windows: the panes holding samples, oldest first.
    pub panes: Vec<PaneSnapshot>,
}

/// One slide of a sliding window (version 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaneSnapshot {
    pub start: i64,
    pub count: i64,
    pub figure: f64,
}

/// One composite rule's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositeSnapshot {
    /// Versions 1 to 3 (version 4 writes it empty and keys by `id`).
    pub name: String,
    /// Versions 1 to 3: the definition's fingerprint.
    pub spec: String,
    pub fired_while_holding: bool,
    pub cooldown_until: Option<i64>,
    /// Since version 4: the definition's id.
    #[serde(default)]
    pub id: i64,
}

/// A sample waiting for the watermark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSnapshot {
    pub timestamp: i64,
    pub seq: i64,
    pub values: Vec<Option<f64>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationSnapshot {
    pub start: i64,
    pub end: i64,
    pub value: f64,
    pub samples: i64,
    pub breach_threshold: Option<f64>,
    pub breach_below: Option<bool>,
    pub level: Option<String>,
    pub statistic: Option<f64>,
    pub learning: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightSnapshot {
    pub request_id: String,
    pub action: String,
    pub issued_at: i64,
    pub last_status: Option<String>,
}

/// A rule definition's fingerprint: state survives only an unchanged rule.
/// A digest of the whole definition (detector parameters included), so
/// that every snapshot does not carry each rule's definition in full.
pub fn rule_fingerprint(spec: &RuleSpec) -> String {
    digest(&format!("{spec:?}"))
}

fn digest(text: &str) -> String {
    super::hex128(&Sha256::digest(text.as_bytes()))
}

/// The fingerprint snapshot version 1 wrote for `spec`, for the rules
/// version 1 could express (a threshold, N consecutive windows, an action),
/// so that their state survives the upgrade.
fn version_1_fingerprint(spec: &RuleSpec) -> Option<String> {
    let a = &spec.alert;
    let action = spec.action?;
    if a.confirm != a.of || a.recover_after.is_some() {
        return None;
    }
    let DetectorSpec::Threshold { below, above } = spec.detector else {
        return None;
    };
    Some(format!(
        "RuleSpec {{ name: {:?}, metric: {:?}, window: {:?}, aggregate: {:?}, detector: Threshold {{ below: {below:?}, above: {above:?} }}, confirm: {}, cooldown_ms: {}, action: {action:?} }}",
        spec.name, spec.metric, spec.window, spec.aggregate, a.confirm, a.cooldown_ms
    ))
}

/// A composite rule's fingerprint, as for rules.
fn composite_fingerprint(spec: &CompositeSpec) -> String {
    digest(&format!("{spec:?}"))
}

/// A silence rule's fingerprint, as for rules.
fn silence_fingerprint(spec: &SilenceSpec) -> String {
    digest(&format!("{spec:?}"))
}

/// The fingerprints of a policy's rules and composites, computed once per
/// policy (see [`Policy::fingerprints`]) rather than for every snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprints {
    pub rules: Vec<String>,
    /// What version 1 wrote for each rule, where it could express it.
    pub version_1: Vec<Option<String>>,
    pub composites: Vec<String>,
    pub silences: Vec<String>,
    /// The same as numbers, kept in the live state: a rule's state belongs
    /// to the definition with its id (see `ModelState::rebind`).
    pub rule_ids: Vec<u64>,
    pub composite_ids: Vec<u64>,
    pub silence_ids: Vec<u64>,
    /// Of the whole policy: a model whose id differs was built under
    /// another version of the policy (a reload).
    pub policy_id: u64,
}

impl Fingerprints {
    pub fn of(policy: &Policy) -> Self {
        let rules: Vec<String> = policy.rules.iter().map(rule_fingerprint).collect();
        let composites: Vec<String> = policy
            .composites
            .iter()
            .map(composite_fingerprint)
            .collect();
        let silences: Vec<String> = policy.silences.iter().map(silence_fingerprint).collect();
        let id = |hex: &String| u64::from_str_radix(&hex[..16], 16).unwrap_or(0);
        let all =
            rules
                .iter()
                .chain(&composites)
                .chain(&silences)
                .fold(String::new(), |mut acc, f| {
                    acc.push_str(f);
                    acc
                });
        Fingerprints {
            version_1: policy.rules.iter().map(version_1_fingerprint).collect(),
            rule_ids: rules.iter().map(id).collect(),
            composite_ids: composites.iter().map(id).collect(),
            silence_ids: silences.iter().map(id).collect(),
            policy_id: id(&digest(&format!("{}|{all}", policy.pattern))),
            rules,
            composites,
            silences,
        }
    }
}

impl ModelSnapshot {
    /// Captures `model` (governed by `policy`) at input offset
    /// `input_offset`, in the form of the current version: rules,
    /// composites and silences keyed by the id of the definition their
    /// state belongs to, windows as statistics, counters as fields.
    pub fn capture(model: &ModelState, policy: Option<&Policy>, input_offset: i64) -> Self {
        let c = &model.counters;
        let id = |id: u64| id as i64;
        ModelSnapshot {
            project: model.project().to_owned(),
            name: model.name().to_owned(),
            version: model.version.clone(),
            retired_versions: model.retired_versions.iter().cloned().collect(),
            policy: model.policy.to_string(),
            input_offset,
            rules: model
                .rules
                .iter()
                .take(policy.map_or(0, |p| p.rules.len()))
                .map(capture_rule)
                .collect(),
            composites: model
                .composites
                .iter()
                .take(policy.map_or(0, |p| p.composites.len()))
                .map(|state| CompositeSnapshot {
                    name: String::new(),
                    spec: String::new(),
                    fired_while_holding: state.fired_while_holding,
                    cooldown_until: state.cooldown_until,
                    id: id(state.id),
                })
                .collect(),
            pending: model
                .pending
                .iter()
                .map(|((timestamp, seq), values)| PendingSnapshot {
                    timestamp: *timestamp,
                    seq: i64::try_from(*seq).unwrap_or(i64::MAX),
                    values: values.clone(),
                })
                .collect(),
            in_flight: model.in_flight.as_ref().map(|f| InFlightSnapshot {
                request_id: f.request_id.clone(),
                action: f.action.as_str().to_owned(),
                issued_at: f.issued_at,
                last_status: f.last_status.map(|s| status_name(s).to_owned()),
            }),
            backoff_until: model.backoff_until,
            last_event_at: model.last_event_at,
            counters: BTreeMap::new(),
            last_heard_at: model.last_heard_at,
            silences: model
                .silences
                .iter()
                .take(policy.map_or(0, |p| p.silences.len()))
                .map(|state| SilenceSnapshot {
                    name: String::new(),
                    spec: String::new(),
                    silent_since: state.silent_since,
                    cooldown_until: state.cooldown_until,
                    id: id(state.id),
                })
                .collect(),
            counts: Some(CountersSnapshot {
                events_applied: c.events_applied as i64,
                late_events: c.late_events as i64,
                late_samples: c.late_samples as i64,
                warning_windows: c.warning_windows as i64,
                overflow_samples: c.overflow_samples as i64,
                requests: c.requests as i64,
                suppressed_while_in_flight: c.suppressed_while_in_flight as i64,
                request_timeouts: c.request_timeouts as i64,
                future_events: c.future_events as i64,
            }),
        }
    }

    /// The lineage `project/name`.
    pub fn lineage(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }

    /// Rebuilds the model under `policy` (the current configuration). Rule
    /// state is kept for rules whose definition is unchanged; other rules
    /// start fresh, and so do all rules if the policy itself changed (the
    /// samples waiting for the watermark are then dropped too, since they
    /// hold one value per rule of the old policy).
    pub fn restore(&self, policy: &Policy) -> ModelState {
        let mut model = ModelState::new(&self.project, &self.name, policy);
        model.version = self.version.clone();
        model.retired_versions = self
            .retired_versions
            .iter()
            .cloned()
            .collect::<VecDeque<_>>();
        if *self.policy == *policy.pattern {
            let fingerprints = policy.fingerprints();
            for (i, (spec, state)) in policy.rules.iter().zip(model.rules.iter_mut()).enumerate() {
                let fingerprint = &fingerprints.rules[i];
                let legacy = fingerprints.version_1[i].as_ref();
                let id = fingerprints.rule_ids[i];
                if let Some(saved) = self.rules.iter().find(|r| {
                    same_definition(r.id, id, || {
                        r.rule == spec.name && (&r.spec == fingerprint || legacy == Some(&r.spec))
                    })
                }) {
                    if let Some(restored) = restore_rule(spec, saved) {
                        *state = RuleState {
                            id: state.id,
                            ..restored
                        };
                    }
                }
            }
            for (i, (spec, state)) in policy
                .composites
                .iter()
                .zip(model.composites.iter_mut())
                .enumerate()
            {
                let fingerprint = &fingerprints.composites[i];
                let id = fingerprints.composite_ids[i];
                if let Some(saved) = self.composites.iter().find(|c| {
                    same_definition(c.id, id, || c.name == spec.name && &c.spec == fingerprint)
                }) {
                    *state = CompositeState {
                        id: state.id,
                        fired_while_holding: saved.fired_while_holding,
                        cooldown_until: saved.cooldown_until,
                    };
                }
            }
            for (i, (spec, state)) in policy
                .silences
                .iter()
                .zip(model.silences.iter_mut())
                .enumerate()
            {
                let fingerprint = &fingerprints.silences[i];
                let id = fingerprints.silence_ids[i];
                if let Some(saved) = self.silences.iter().find(|s| {
                    same_definition(s.id, id, || s.name == spec.name && &s.spec == fingerprint)
                }) {
                    state.silent_since = saved.silent_since;
                    state.cooldown_until = saved.cooldown_until;
                }
            }
            // Waiting samples hold one value per rule, in the order of the
            // rules they were taken under: kept only if that order stands.
            let same_rules =
                self.rules.len() == policy.rules.len()
                    && self.rules.iter().zip(&policy.rules).enumerate().all(
                        |(i, (saved, spec))| {
                            same_definition(saved.id, fingerprints.rule_ids[i], || {
                                saved.rule == spec.name
                            })
                        },
                    );
            let rules = policy.rules.len();
            model.pending = self
                .pending
                .iter()
                .filter(|p| same_rules && p.values.len() == rules)
                .map(|p| {
                    let seq = u64::try_from(p.seq.max(0)).unwrap_or(0);
                    ((p.timestamp, seq), p.values.clone())
                })
                .collect();
        }
        model.in_flight = self.in_flight.as_ref().and_then(|f| {
            Some(Box::new(InFlight {
                request_id: f.request_id.clone(),
                action: parse_action(&f.action)?,
                issued_at: f.issued_at,
                last_status: f.last_status.as_deref().and_then(parse_status),
            }))
        });
        model.backoff_until = self.backoff_until;
        model.last_event_at = self.last_event_at;
        model.last_heard_at = self.last_heard_at.or(self.last_event_at);
        let named = |k: &str| self.counters.get(k).copied().unwrap_or(0);
        let c = self.counts.unwrap_or_else(|| CountersSnapshot {
            events_applied: named("events_applied"),
            late_events: named("late_events"),
            late_samples: named("late_samples"),
            warning_windows: named("warning_windows"),
            overflow_samples: named("overflow_samples"),
            requests: named("requests"),
            suppressed_while_in_flight: named("suppressed_while_in_flight"),
            request_timeouts: named("request_timeouts"),
            future_events: named("future_events"),
        });
        let count = |n: i64| n.max(0) as u64;
        model.counters = ModelCounters {
            events_applied: count(c.events_applied),
            late_events: count(c.late_events),
            late_samples: count(c.late_samples),
            warning_windows: count(c.warning_windows),
            overflow_samples: count(c.overflow_samples),
            requests: count(c.requests),
            suppressed_while_in_flight: count(c.suppressed_while_in_flight),
            request_timeouts: count(c.request_timeouts),
            future_events: count(c.future_events),
        };
        model.input_offset = self.input_offset;
        model
    }
}

/// Whether a saved state belongs to the definition with id `id`: by the
/// id version 4 saved, or, in older versions (no id, 0), by `legacy` (the
/// name and the fingerprint text they saved).
fn same_definition(saved_id: i64, id: u64, legacy: impl FnOnce() -> bool) -> bool {
    match saved_id {
        0 => legacy(),
        saved => saved == id as i64,
    }
}

fn capture_rule(rule: &RuleState) -> RuleSnapshot {
    let pane_snapshot = |p: &Pane| (p.count as i64, p.figure);
    let (window_start, window_last, window, values, timestamps) = match &rule.window {
        WindowState::Count {
            first_ts,
            last_ts,
            pane,
            largest,
            ..
        } => {
            let (count, figure) = pane_snapshot(pane);
            let mut values: Vec<f64> = largest.values().collect();
            values.sort_unstable_by(f64::total_cmp);
            let window = WindowSnapshot {
                count,
                figure,
                panes: Vec::new(),
            };
            (Some(*first_ts), *last_ts, window, values, Vec::new())
        }
        WindowState::Tumbling {
            start,
            pane,
            values,
            ..
        } => {
            let (count, figure) = pane_snapshot(pane);
            let window = WindowSnapshot {
                count,
                figure,
                panes: Vec::new(),
            };
            (*start, 0, window, values.clone(), Vec::new())
        }
        WindowState::Sliding {
            next_end,
            panes,
            samples,
            ..
        } => {
            let window = WindowSnapshot {
                count: 0,
                figure: 0.0,
                panes: panes
                    .iter()
                    .map(|(start, p)| PaneSnapshot {
                        start: *start,
                        count: p.count as i64,
                        figure: p.figure,
                    })
                    .collect(),
            };
            (
                *next_end,
                0,
                window,
                samples.iter().map(|(_, v)| *v).collect(),
                samples.iter().map(|(t, _)| *t).collect(),
            )
        }
    };
    RuleSnapshot {
        rule: String::new(),
        spec: String::new(),
        window_start,
        window_last,
        values,
        timestamps,
        consecutive: 0,
        cooldown_until: rule.alert.cooldown_until,
        recent: rule.alert.recent as i64,
        in_alarm: rule.alert.active,
        calm: i64::from(rule.alert.calm),
        fired_in_episode: rule.alert.fired_in_episode,
        detector_state: match &rule.detector {
            DetectorState::Threshold => None,
            // Every detector state serializes (no maps with non-string keys).
            state => serde_json::to_string(state).ok(),
        },
        last: rule.last.map(|e| EvaluationSnapshot {
            start: e.window.start,
            end: e.window.end,
            value: e.window.value,
            samples: e.window.samples as i64,
            breach_threshold: e.judgement.threshold,
            breach_below: e.judgement.direction.map(|d| d == Direction::Below),
            level: Some(level_name(e.judgement.level).to_owned()),
            statistic: e.judgement.statistic,
            learning: e.judgement.learning,
        }),
        id: rule.id as i64,
        window: Some(window),
    }
}

/// `None` when the saved state does not fit the rule's window kind.
fn restore_rule(spec: &RuleSpec, saved: &RuleSnapshot) -> Option<RuleState> {
    let mut state = RuleState::new(spec);
    restore_window(spec, saved, &mut state.window)?;
    let recent = if saved.recent != 0 {
        saved.recent as u64
    } else {
        // Version 1 kept a count of consecutive breaching windows.
        let consecutive = saved.consecutive.clamp(0, 64) as u32;
        u64::MAX.checked_shr(64 - consecutive).unwrap_or(0)
    };
    state.alert = AlertState {
        recent,
        active: saved.in_alarm,
        calm: u32::try_from(saved.calm.max(0)).unwrap_or(u32::MAX),
        cooldown_until: saved.cooldown_until,
        fired_in_episode: saved.fired_in_episode,
    };
    if let Some(json) = &saved.detector_state {
        match serde_json::from_str::<DetectorState>(json) {
            Ok(detector) if same_kind(&detector, &state.detector) => state.detector = detector,
            // A state this build cannot read starts fresh.
            _ => {}
        }
    }
    state.last = saved.last.as_ref().map(|e| {
        let level = match e.level.as_deref() {
            Some(name) => parse_level(name),
            None if e.breach_threshold.is_some() => Level::Drift,
            None => Level::Stable,
        };
        Evaluation {
            window: WindowResult {
                start: e.start,
                end: e.end,
                value: e.value,
                samples: e.samples.max(0) as usize,
            },
            judgement: Judgement {
                level,
                // Version 1 had no statistic: a threshold's is the value.
                statistic: e.statistic.or(e.level.is_none().then_some(e.value)),
                threshold: e.breach_threshold,
                direction: e.breach_below.map(|below| {
                    if below {
                        Direction::Below
                    } else {
                        Direction::Above
                    }
                }),
                learning: e.learning,
            },
        }
    });
    Some(state)
}

/// Puts the saved window (statistics in version 4, every sample before)
/// into `window`, a fresh window of the rule; `None` when it does not fit.
fn restore_window(spec: &RuleSpec, saved: &RuleSnapshot, window: &mut WindowState) -> Option<()> {
    let aggregate = spec.aggregate;
    let percentile = aggregate == Aggregate::P95;
    let count = |n: i64| u64::try_from(n).ok();
    let Some(w) = &saved.window else {
        return restore_samples(aggregate, saved, window);
    };
    match window {
        WindowState::Count {
            size,
            first_ts,
            last_ts,
            pane,
            largest,
        } => {
            *first_ts = saved.window_start.unwrap_or(0);
            *last_ts = saved.window_last;
            *pane = Pane {
                count: count(w.count)?,
                figure: w.figure,
            };
            if percentile {
                let k = count_window_kept(*size);
                for v in &saved.values {
                    largest.keep(k, *v);
                }
            }
        }
        WindowState::Tumbling {
            start,
            pane,
            values,
            ..
        } => {
            *start = saved.window_start;
            *pane = Pane {
                count: count(w.count)?,
                figure: w.figure,
            };
            if percentile {
                values.clone_from(&saved.values);
            }
        }
        WindowState::Sliding {
            next_end,
            panes,
            samples,
            ..
        } => {
            if percentile && saved.timestamps.len() != saved.values.len() {
                return None;
            }
            *next_end = saved.window_start;
            for p in &w.panes {
                panes.push((
                    p.start,
                    Pane {
                        count: count(p.count)?,
                        figure: p.figure,
                    },
                ));
            }
            panes.sort_by_key(|(start, _)| *start);
            if percentile {
                samples.extend(
                    saved
                        .timestamps
                        .iter()
                        .copied()
                        .zip(saved.values.iter().copied()),
                );
            }
        }
    }
    Some(())
}

/// Versions 1 to 3 kept every sample of the open windows: they are added
/// up again.
fn restore_samples(
    aggregate: Aggregate,
    saved: &RuleSnapshot,
    window: &mut WindowState,
) -> Option<()> {
    let sliding = matches!(window, WindowState::Sliding { .. });
    if sliding && saved.timestamps.len() != saved.values.len() {
        return None;
    }
    for (i, value) in saved.values.iter().enumerate() {
        let ts = if sliding { saved.timestamps[i] } else { 0 };
        window.absorb(ts, *value, aggregate);
    }
    match window {
        WindowState::Count {
            first_ts, last_ts, ..
        } => {
            *first_ts = saved.window_start.unwrap_or(0);
            *last_ts = saved.window_last;
        }
        WindowState::Tumbling { start, .. } => *start = saved.window_start,
        WindowState::Sliding { next_end, .. } => *next_end = saved.window_start,
    }
    Some(())
}

fn same_kind(a: &DetectorState, b: &DetectorState) -> bool {
    match (a, b) {
        (DetectorState::Threshold, DetectorState::Threshold) => true,
        (DetectorState::Sequential(a), DetectorState::Sequential(b)) => {
            a.detector.name() == b.detector.name() && a.baseline.is_some() == b.baseline.is_some()
        }
        _ => false,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Stable => "stable",
        Level::Warning => "warning",
        Level::Drift => "drift",
    }
}

fn parse_level(name: &str) -> Level {
    match name {
        "warning" => Level::Warning,
        "drift" => Level::Drift,
        _ => Level::Stable,
    }
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
