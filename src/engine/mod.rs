//! The pure engine: no I/O, no clock, no async. Metric events and retrain
//! statuses go in, retrain requests come out. Every driver (the Kafka
//! consumer, `replay`, the demo, tests and benchmarks) runs this same code, so
//! an offline replay is an oracle for the streaming path.

pub mod alert;
pub mod detector;
pub mod policy;
pub mod snapshot;
pub mod state;
pub mod window;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::detect::Level;
use crate::model::{Action, MetricEvent, ModelRef, RetrainRequest, RetrainStatus, StatusKind};
use detector::{DetectorSpec, Direction, Judgement};
use policy::{Policy, PolicySet, RuleSpec, WindowSpec};
use state::{InFlight, ModelState, PartitionState, PendingValues};
use window::{Placement, WindowResult};

/// Engine-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// New models beyond this many in one partition are not tracked (counted).
    pub max_models_per_partition: usize,
    /// How far behind its partition's stream time an event may be and still
    /// be placed in its window. Samples wait until the watermark (stream
    /// time minus this) passes them, then enter the windows in event-time
    /// order; so out-of-order input within the lateness gives the same
    /// windows as in-order input, and later events are refused.
    pub allowed_lateness_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_models_per_partition: 100_000,
            allowed_lateness_ms: 0,
        }
    }
}

/// Why an event was not applied to any state. Each is counted, never silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No policy matches the model and there is no default (`match = "*"`).
    NoPolicy,
    /// The event is behind its partition's watermark (stream time minus
    /// the allowed lateness).
    TooLate,
    /// The event belongs to a version the model has already moved past.
    StaleVersion,
    /// The partition already tracks its maximum number of models.
    ModelCap,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoPolicy => "no_policy",
            SkipReason::TooLate => "too_late",
            SkipReason::StaleVersion => "stale_version",
            SkipReason::ModelCap => "model_cap",
        }
    }
}

/// The result of applying one event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    Applied {
        /// Requests this event caused. The samples it releases (its own and,
        /// when the watermark advances, other models' waiting ones) can each
        /// fire at most one request; the strongest action wins.
        requests: Vec<RetrainRequest>,
        /// The model is new to this partition.
        new_model: bool,
        /// Other models whose state changed because the watermark advanced.
        released: Vec<String>,
    },
    Skipped(SkipReason),
}

/// The result of applying one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The model's in-flight request was updated (and, if terminal, resolved).
    Applied,
    /// The status is for a request that is not the one in flight (an old
    /// request, or one this state has not issued yet).
    NotInFlight,
    /// The model is not in this partition's state.
    UnknownModel,
}

/// One window judged by a rule, as recorded by [`Engine::apply_event_traced`].
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub lineage: String,
    /// Index of the rule in the model's policy.
    pub rule: usize,
    pub window: WindowResult,
    pub judgement: Judgement,
}

/// The decision logic. Holds the policies; state is passed in.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    policies: PolicySet,
    limits: Limits,
}

/// A rule or composite rule ready to fire on this sample.
struct Candidate {
    source: Source,
    window: WindowResult,
    judgement: Option<Judgement>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Rule(usize),
    Composite(usize),
}

impl Candidate {
    fn name<'p>(&self, policy: &'p Policy) -> &'p str {
        match self.source {
            Source::Rule(i) => &policy.rules[i].name,
            Source::Composite(j) => &policy.composites[j].name,
        }
    }

    fn action(&self, policy: &Policy) -> Action {
        match self.source {
            Source::Rule(i) => policy.rules[i].action.unwrap_or(Action::FineTune),
            Source::Composite(j) => policy.composites[j].action,
        }
    }

    /// Configuration order: rules, then composite rules.
    fn order(&self, policy: &Policy) -> usize {
        match self.source {
            Source::Rule(i) => i,
            Source::Composite(j) => policy.rules.len() + j,
        }
    }
}

impl Engine {
    pub fn new(policies: PolicySet, limits: Limits) -> Self {
        Engine { policies, limits }
    }

    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The policy that governs `lineage`.
    pub fn policy_for(&self, lineage: &str) -> Option<&Policy> {
        self.policies.for_lineage(lineage)
    }

    /// Applies one valid event (see [`MetricEvent::validate`]) to the state
    /// of the partition it was read from.
    pub fn apply_event(&self, part: &mut PartitionState, event: &MetricEvent) -> EventOutcome {
        self.apply_event_traced(part, event, None)
    }

    /// [`Engine::apply_event`], also recording every window judged (for
    /// reports) in `trace`.
    pub fn apply_event_traced(
        &self,
        part: &mut PartitionState,
        event: &MetricEvent,
        mut trace: Option<&mut Vec<Judged>>,
    ) -> EventOutcome {
        let lineage = event.model.lineage();
        let Some(policy) = self.policies.for_lineage(&lineage) else {
            return EventOutcome::Skipped(SkipReason::NoPolicy);
        };
        let lateness = self.limits.allowed_lateness_ms;
        if part
            .watermark(lateness)
            .is_some_and(|w| event.timestamp < w)
        {
            if let Some(model) = part.models.get_mut(&lineage) {
                model.counters.late_events += 1;
            }
            return EventOutcome::Skipped(SkipReason::TooLate);
        }
        let new_model = !part.models.contains_key(&lineage);
        if new_model && part.models.len() >= self.limits.max_models_per_partition {
            return EventOutcome::Skipped(SkipReason::ModelCap);
        }
        let model = part
            .models
            .entry(lineage.clone())
            .or_insert_with(|| ModelState::new(&event.model.project, &event.model.name, policy));
        // Another policy, or a new version of it (configuration reload).
        model.rebind(policy);

        // Version handling: a new version starts fresh; stragglers of a
        // superseded version are ignored.
        match (&model.version, &event.model.version) {
            (_, None) => {}
            (None, Some(v)) if model.counters.events_applied == 0 => {
                model.version = Some(v.clone());
            }
            (Some(cur), Some(v)) if cur == v => {}
            (_, Some(v)) if model.retired_versions.contains(v) => {
                return EventOutcome::Skipped(SkipReason::StaleVersion);
            }
            // An unknown version older than what the model has seen is a
            // straggler, not a deployment.
            (_, Some(_)) if model.last_event_at.is_some_and(|t| event.timestamp < t) => {
                return EventOutcome::Skipped(SkipReason::StaleVersion);
            }
            (_, Some(v)) => model.start_version(Some(v.clone()), Some(policy)),
        }

        model.counters.events_applied += 1;
        model.last_event_at = Some(
            model
                .last_event_at
                .map_or(event.timestamp, |t| t.max(event.timestamp)),
        );
        let stream_time = part
            .stream_time
            .map_or(event.timestamp, |t| t.max(event.timestamp));
        part.stream_time = Some(stream_time);
        let watermark = stream_time.saturating_sub(lateness);

        let values: PendingValues = policy
            .rules
            .iter()
            .map(|rule| event.value(&rule.metric))
            .collect();
        let mut requests = Vec::new();
        let mut released = Vec::new();
        if values.iter().all(Option::is_none) {
            // Nothing for any rule: only the model-level bookkeeping above.
        } else if part.pending.is_empty() && event.timestamp <= watermark {
            // Nothing waits and this sample is already behind the watermark
            // (always so without lateness): straight into the windows.
            requests.extend(self.process_sample(
                model,
                policy,
                event.timestamp,
                &values,
                trace.as_deref_mut(),
            ));
        } else {
            let key = (event.timestamp, part.next_seq);
            part.next_seq += 1;
            model.pending.insert(key, values);
            part.pending.insert(key, lineage.clone());
        }
        self.release(part, watermark, &mut requests, &mut released, trace);
        released.retain(|l| *l != lineage);
        released.sort_unstable();
        released.dedup();
        EventOutcome::Applied {
            requests,
            new_model,
            released,
        }
    }

    /// Feeds every waiting sample at or before `watermark` into its model's
    /// windows, in event-time order.
    fn release(
        &self,
        part: &mut PartitionState,
        watermark: i64,
        requests: &mut Vec<RetrainRequest>,
        released: &mut Vec<String>,
        mut trace: Option<&mut Vec<Judged>>,
    ) {
        while let Some(entry) = part.pending.first_entry() {
            if entry.key().0 > watermark {
                break;
            }
            let (key, lineage) = entry.remove_entry();
            // Entries of a model that restarted (new version) are gone.
            let Some(model) = part.models.get_mut(&lineage) else {
                continue;
            };
            let Some(values) = model.pending.remove(&key) else {
                continue;
            };
            let Some(policy) = self.policies.for_lineage(&lineage) else {
                continue;
            };
            if values.len() == policy.rules.len() {
                requests.extend(self.process_sample(
                    model,
                    policy,
                    key.0,
                    &values,
                    trace.as_deref_mut(),
                ));
            }
            released.push(lineage);
        }
    }

    /// One sample (the values of one event for each rule) into the windows,
    /// detectors and alert logic; returns the request it fires, if any.
    fn process_sample(
        &self,
        model: &mut ModelState,
        policy: &Policy,
        timestamp: i64,
        values: &[Option<f64>],
        mut trace: Option<&mut Vec<Judged>>,
    ) -> Option<RetrainRequest> {
        // An unresolved request stops blocking once its timeout has passed.
        if let Some(flight) = &model.in_flight {
            if timestamp >= flight.issued_at.saturating_add(policy.request_timeout_ms) {
                model.in_flight = None;
                model.counters.request_timeouts += 1;
            }
        }

        let mut candidates = Vec::new();
        let mut closed = Vec::new();
        let mut judged = false;
        for (index, (spec, rule)) in policy.rules.iter().zip(model.rules.iter_mut()).enumerate() {
            let Some(value) = values.get(index).copied().flatten() else {
                continue;
            };
            closed.clear();
            match rule
                .window
                .push(timestamp, value, spec.aggregate, &mut closed)
            {
                Placement::Accepted => {}
                Placement::TooLate => model.counters.late_samples += 1,
                Placement::Overflow => model.counters.overflow_samples += 1,
            }
            for window in &closed {
                judged = true;
                let ready = rule.evaluate(spec, *window);
                if let (Some(trace), Some(last)) = (trace.as_deref_mut(), rule.last) {
                    trace.push(Judged {
                        lineage: model.lineage.clone(),
                        rule: index,
                        window: last.window,
                        judgement: last.judgement,
                    });
                }
                if rule.level() == Level::Warning {
                    model.counters.warning_windows += 1;
                }
                if ready && spec.action.is_some() {
                    candidates.push(Candidate {
                        source: Source::Rule(index),
                        window: *window,
                        judgement: rule.last.map(|e| e.judgement),
                    });
                }
            }
        }
        if judged {
            for (j, composite) in policy.composites.iter().enumerate() {
                let members = composite.members.iter().map(|m| &model.rules[*m]);
                let in_alarm = members.clone().filter(|r| r.alert.active).count();
                let holds = in_alarm >= composite.combine.required(composite.members.len());
                let lasts = members.filter_map(|r| r.last.map(|e| e.window));
                let window = lasts.fold(None, |acc: Option<WindowResult>, w| {
                    Some(acc.map_or(w, |a| WindowResult {
                        start: a.start.min(w.start),
                        end: a.end.max(w.end),
                        value: 0.0,
                        samples: a.samples + w.samples,
                    }))
                });
                let Some(mut window) = window else {
                    continue;
                };
                window.value = in_alarm as f64;
                if model.composites[j].observe(holds, window.end) {
                    candidates.push(Candidate {
                        source: Source::Composite(j),
                        window,
                        judgement: None,
                    });
                }
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let backing_off = model
            .backoff_until
            .is_some_and(|until| candidates.iter().all(|c| c.window.end < until));
        if model.in_flight.is_some() || backing_off {
            model.counters.suppressed_while_in_flight += 1;
            return None;
        }
        Some(self.fire(model, policy, &candidates))
    }

    /// Builds the request for the rules that fired, marks it in flight and
    /// starts the rules' cooldowns.
    fn fire(
        &self,
        model: &mut ModelState,
        policy: &Policy,
        candidates: &[Candidate],
    ) -> RetrainRequest {
        // Strongest action wins; among equals the first in config order.
        let primary = candidates
            .iter()
            .max_by(|a, b| {
                a.action(policy)
                    .cmp(&b.action(policy))
                    .then(b.order(policy).cmp(&a.order(policy)))
            })
            .unwrap_or(&candidates[0]);
        let triggered_at = candidates
            .iter()
            .map(|c| c.window.end)
            .max()
            .unwrap_or(primary.window.end);
        let mut fired: Vec<&str> = candidates.iter().map(|c| c.name(policy)).collect();
        fired.sort_unstable();
        fired.dedup();

        let model_ref = ModelRef {
            project: model.project.clone(),
            name: model.name.clone(),
            version: model.version.clone(),
        };
        let request_id = request_id(&model_ref, &fired, primary.window.start, triggered_at);
        let mut evidence = BTreeMap::new();
        evidence.insert("policy".to_owned(), policy.pattern.clone());
        evidence.insert("rules_fired".to_owned(), fired.join(","));
        for c in candidates {
            evidence.insert(format!("rule.{}", c.name(policy)), describe(policy, c));
        }
        for c in candidates {
            match c.source {
                Source::Rule(i) => model.rules[i]
                    .alert
                    .fired(&policy.rules[i].alert, c.window.end),
                Source::Composite(j) => {
                    model.composites[j].fired(policy.composites[j].cooldown_ms, c.window.end)
                }
            }
        }
        let action = primary.action(policy);
        model.counters.requests += 1;
        model.in_flight = Some(InFlight {
            request_id: request_id.clone(),
            action,
            issued_at: triggered_at,
            last_status: None,
        });
        let (detector, metric, threshold) = match primary.source {
            Source::Rule(i) => {
                let spec = &policy.rules[i];
                let threshold = primary.judgement.and_then(|j| j.threshold);
                (
                    spec.detector.name().to_owned(),
                    spec.metric.clone(),
                    threshold.unwrap_or(f64::NAN),
                )
            }
            Source::Composite(j) => {
                let spec = &policy.composites[j];
                let metrics: Vec<&str> = policy.members(spec).map(|r| r.metric.as_str()).collect();
                let required = spec.combine.required(spec.members.len());
                (
                    spec.combine.as_str().to_owned(),
                    metrics.join(","),
                    required as f64,
                )
            }
        };
        RetrainRequest {
            request_id,
            model: model_ref,
            action,
            rule: primary.name(policy).to_owned(),
            detector,
            metric,
            observed: primary.window.value,
            threshold,
            window_start: primary.window.start,
            window_end: primary.window.end,
            triggered_at,
            reason: reason(policy, primary),
            evidence,
        }
    }

    /// Applies a coordinator status to the model it names, if this partition
    /// holds it.
    pub fn apply_status(&self, part: &mut PartitionState, status: &RetrainStatus) -> StatusOutcome {
        let lineage = status.model.lineage();
        let Some(model) = part.models.get_mut(&lineage) else {
            return StatusOutcome::UnknownModel;
        };
        let matches = model
            .in_flight
            .as_ref()
            .is_some_and(|f| f.request_id == status.request_id);
        if !matches {
            return StatusOutcome::NotInFlight;
        }
        if status.status.is_terminal() {
            self.resolve(model, status.status, status.new_version.clone());
        } else if let Some(flight) = &mut model.in_flight {
            flight.last_status = Some(status.status);
        }
        StatusOutcome::Applied
    }

    fn resolve(&self, model: &mut ModelState, status: StatusKind, new_version: Option<String>) {
        let issued_at = model.in_flight.take().map_or(i64::MIN, |f| f.issued_at);
        let policy = self.policies.for_lineage(&model.lineage);
        if status == StatusKind::Failed {
            let backoff = policy.map_or(0, |p| p.failed_backoff_ms);
            if backoff > 0 {
                let from = model.last_event_at.unwrap_or(issued_at).max(issued_at);
                model.backoff_until = Some(from.saturating_add(backoff));
            }
        }
        if status == StatusKind::Succeeded {
            model.backoff_until = None;
            if let Some(version) = new_version.filter(|v| model.version.as_ref() != Some(v)) {
                model.start_version(Some(version), policy);
            }
        }
    }
}

/// A deterministic request id: the same model, rules and windows always
/// give the same id, however the input was delivered.
pub fn request_id(
    model: &ModelRef,
    fired_rules: &[&str],
    window_start: i64,
    triggered_at: i64,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model.project.as_bytes());
    hasher.update([0]);
    hasher.update(model.name.as_bytes());
    hasher.update([0]);
    hasher.update(model.version.as_deref().unwrap_or("").as_bytes());
    hasher.update([0]);
    for rule in fired_rules {
        hasher.update(rule.as_bytes());
        hasher.update([0]);
    }
    hasher.update(window_start.to_be_bytes());
    hasher.update(triggered_at.to_be_bytes());
    hex128(&hasher.finalize())
}

/// The first 128 bits of a digest as 32 hex digits: request ids and rule
/// fingerprints.
pub(crate) fn hex128(digest: &[u8]) -> String {
    let mut out = String::with_capacity(32);
    for byte in digest.iter().take(16) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn window_words(spec: &RuleSpec) -> String {
    match spec.window {
        WindowSpec::Count { size } => format!("{size}-sample"),
        WindowSpec::Tumbling { size_ms } | WindowSpec::Sliding { size_ms, .. } => {
            humantime::format_duration(std::time::Duration::from_millis(size_ms.max(0) as u64))
                .to_string()
        }
    }
}

fn confirmation_words(spec: &RuleSpec) -> String {
    let a = &spec.alert;
    let windows = window_words(spec);
    if a.confirm == a.of {
        format!("{} consecutive {windows} window(s)", a.confirm)
    } else {
        format!("{} of the last {} {windows} windows", a.confirm, a.of)
    }
}

/// One line saying why a request was made.
fn reason(policy: &Policy, c: &Candidate) -> String {
    match c.source {
        Source::Rule(i) => {
            let spec = &policy.rules[i];
            let head = format!(
                "{} {} {:.4}",
                spec.metric,
                spec.aggregate.as_str(),
                c.window.value
            );
            let judged = match (&spec.detector, c.judgement) {
                (DetectorSpec::Threshold { .. }, Some(j)) => {
                    let side = match j.direction {
                        Some(Direction::Below) => "below",
                        _ => "above",
                    };
                    format!("{side} {}", j.threshold.unwrap_or(f64::NAN))
                }
                (_, Some(j)) => format!(
                    "drifted: {} statistic {:.4} beyond {:.4}",
                    spec.detector.name(),
                    j.statistic.unwrap_or(f64::NAN),
                    j.threshold.unwrap_or(f64::NAN)
                ),
                (_, None) => "drifted".to_owned(),
            };
            format!(
                "{head} {judged} for {} (rule {})",
                confirmation_words(spec),
                spec.name
            )
        }
        Source::Composite(j) => {
            let spec = &policy.composites[j];
            let members: Vec<&str> = policy.members(spec).map(|r| r.name.as_str()).collect();
            format!(
                "{} of rules [{}] in alarm: {} of {} (rule {})",
                spec.combine.as_str(),
                members.join(", "),
                c.window.value,
                spec.members.len(),
                spec.name
            )
        }
    }
}

/// The evidence entry of one candidate.
fn describe(policy: &Policy, c: &Candidate) -> String {
    match c.source {
        Source::Rule(i) => {
            let s = &policy.rules[i];
            let (statistic, threshold) = c.judgement.map_or((f64::NAN, f64::NAN), |j| {
                (
                    j.statistic.unwrap_or(f64::NAN),
                    j.threshold.unwrap_or(f64::NAN),
                )
            });
            format!(
                "{} {} of {} = {} over [{}, {}) ({} samples), statistic {}, threshold {}, confirmed by {}, action {}",
                s.detector.name(),
                s.aggregate.as_str(),
                s.metric,
                c.window.value,
                c.window.start,
                c.window.end,
                c.window.samples,
                statistic,
                threshold,
                confirmation_words(s),
                c.action(policy).as_str()
            )
        }
        Source::Composite(_) => format!(
            "{} over [{}, {}), action {}",
            reason(policy, c),
            c.window.start,
            c.window.end,
            c.action(policy).as_str()
        ),
    }
}

#[cfg(test)]
mod tests;
