//! The pure engine: no I/O, no clock, no async. Metric events and retrain
//! statuses go in, retrain requests come out. Every driver (the Kafka
//! consumer, `replay`, the demo, tests and benchmarks) runs this same code, so
//! an offline replay is an oracle for the streaming path.

pub mod detector;
pub mod policy;
pub mod snapshot;
pub mod state;
pub mod window;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::model::{MetricEvent, ModelRef, RetrainRequest, RetrainStatus, StatusKind};
use policy::{Policy, PolicySet, RuleSpec, WindowSpec};
use state::{InFlight, ModelState, PartitionState};
use window::{Placement, WindowResult};

/// Engine-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// New models beyond this many in one partition are not tracked (counted).
    pub max_models_per_partition: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_models_per_partition: 100_000,
        }
    }
}

/// Why an event was not applied to any state. Each is counted, never silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// No policy matches the model and there is no default (`match = "*"`).
    NoPolicy,
    /// Every sample the event carried was older than the open windows.
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
        /// At most one request per event (the strongest action wins).
        request: Option<Box<RetrainRequest>>,
        /// The model is new to this partition.
        new_model: bool,
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

/// The decision logic. Holds the policies; state is passed in.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    policies: PolicySet,
    limits: Limits,
}

/// A rule ready to fire on this event.
struct Candidate {
    rule: usize,
    window: WindowResult,
    threshold: f64,
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
        let lineage = event.model.lineage();
        let Some(policy) = self.policies.for_lineage(&lineage) else {
            return EventOutcome::Skipped(SkipReason::NoPolicy);
        };
        let new_model = !part.models.contains_key(&lineage);
        if new_model && part.models.len() >= self.limits.max_models_per_partition {
            return EventOutcome::Skipped(SkipReason::ModelCap);
        }
        let model = part.models.entry(lineage).or_insert_with(|| {
            ModelState::new(
                &event.model.project,
                &event.model.name,
                &policy.pattern,
                &policy.rules,
            )
        });
        if model.policy != policy.pattern {
            // The policy for this model changed (configuration reload).
            model.policy = policy.pattern.clone();
            model.rules = policy.rules.iter().map(state::RuleState::new).collect();
        }

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
            (_, Some(v)) => model.start_version(Some(v.clone()), &policy.rules),
        }

        // An unresolved request stops blocking once its timeout has passed.
        if let Some(flight) = &model.in_flight {
            if event.timestamp >= flight.issued_at.saturating_add(policy.request_timeout_ms) {
                model.in_flight = None;
                model.counters.request_timeouts += 1;
            }
        }

        let mut offered = 0;
        let mut late = 0;
        let mut overflow = 0;
        let mut candidates = Vec::new();
        let mut closed = Vec::new();
        for (index, (spec, rule)) in policy.rules.iter().zip(model.rules.iter_mut()).enumerate() {
            let Some(value) = event.value(&spec.metric) else {
                continue;
            };
            offered += 1;
            closed.clear();
            match rule
                .window
                .push(event.timestamp, value, spec.aggregate, &mut closed)
            {
                Placement::Accepted => {}
                Placement::TooLate => late += 1,
                Placement::Overflow => overflow += 1,
            }
            for window in &closed {
                if rule.evaluate(spec, *window) {
                    let threshold = rule
                        .last
                        .and_then(|e| e.breach)
                        .map_or(f64::NAN, |b| b.threshold);
                    candidates.push(Candidate {
                        rule: index,
                        window: *window,
                        threshold,
                    });
                }
            }
        }
        if offered > 0 && late == offered {
            return EventOutcome::Skipped(SkipReason::TooLate);
        }
        model.counters.events_applied += 1;
        model.counters.late_samples += late as u64;
        model.counters.overflow_samples += overflow as u64;
        model.last_event_at = Some(
            model
                .last_event_at
                .map_or(event.timestamp, |t| t.max(event.timestamp)),
        );

        let backing_off = model
            .backoff_until
            .is_some_and(|until| candidates.iter().all(|c| c.window.end < until));
        let request = if candidates.is_empty() {
            None
        } else if model.in_flight.is_some() || backing_off {
            model.counters.suppressed_while_in_flight += 1;
            None
        } else {
            Some(Box::new(self.fire(
                model,
                policy,
                &event.model,
                &candidates,
            )))
        };
        EventOutcome::Applied { request, new_model }
    }

    /// Builds the request for the rules that fired, marks it in flight and
    /// starts the rules' cooldowns.
    fn fire(
        &self,
        model: &mut ModelState,
        policy: &Policy,
        model_ref: &ModelRef,
        candidates: &[Candidate],
    ) -> RetrainRequest {
        // Strongest action wins; among equals the first rule in config order.
        let primary = candidates
            .iter()
            .max_by(|a, b| {
                let (sa, sb) = (&policy.rules[a.rule], &policy.rules[b.rule]);
                sa.action.cmp(&sb.action).then(b.rule.cmp(&a.rule))
            })
            .unwrap_or(&candidates[0]);
        let spec = &policy.rules[primary.rule];
        let triggered_at = candidates
            .iter()
            .map(|c| c.window.end)
            .max()
            .unwrap_or(primary.window.end);
        let mut fired: Vec<&str> = candidates
            .iter()
            .map(|c| policy.rules[c.rule].name.as_str())
            .collect();
        fired.sort_unstable();
        fired.dedup();

        let model_ref = ModelRef {
            version: model.version.clone().or_else(|| model_ref.version.clone()),
            ..model_ref.clone()
        };
        let request_id = request_id(&model_ref, &fired, primary.window.start, triggered_at);
        let mut evidence = BTreeMap::new();
        evidence.insert("policy".to_owned(), policy.pattern.clone());
        evidence.insert("rules_fired".to_owned(), fired.join(","));
        for c in candidates {
            let s = &policy.rules[c.rule];
            evidence.insert(
                format!("rule.{}", s.name),
                format!(
                    "{} {} of {} = {} over [{}, {}) ({} samples), threshold {}, {} consecutive windows, action {}",
                    s.detector.name(),
                    s.aggregate.as_str(),
                    s.metric,
                    c.window.value,
                    c.window.start,
                    c.window.end,
                    c.window.samples,
                    c.threshold,
                    s.confirm,
                    s.action.as_str()
                ),
            );
        }
        for c in candidates {
            let rule = &mut model.rules[c.rule];
            rule.consecutive = 0;
            rule.cooldown_until = Some(
                c.window
                    .end
                    .saturating_add(policy.rules[c.rule].cooldown_ms),
            );
        }
        model.counters.requests += 1;
        model.in_flight = Some(InFlight {
            request_id: request_id.clone(),
            action: spec.action,
            issued_at: triggered_at,
            last_status: None,
        });
        RetrainRequest {
            request_id,
            model: model_ref,
            action: spec.action,
            rule: spec.name.clone(),
            detector: spec.detector.name().to_owned(),
            metric: spec.metric.clone(),
            observed: primary.window.value,
            threshold: primary.threshold,
            window_start: primary.window.start,
            window_end: primary.window.end,
            triggered_at,
            reason: reason(spec, primary),
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
                let rules = policy.map(|p| p.rules.as_slice()).unwrap_or(&[]);
                model.start_version(Some(version), rules);
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
    let digest = hasher.finalize();
    let mut id = String::with_capacity(32);
    for byte in &digest[..16] {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

fn reason(spec: &RuleSpec, c: &Candidate) -> String {
    let window = match spec.window {
        WindowSpec::Count { size } => format!("{size}-sample"),
        WindowSpec::Tumbling { size_ms } | WindowSpec::Sliding { size_ms, .. } => {
            humantime::format_duration(std::time::Duration::from_millis(size_ms.max(0) as u64))
                .to_string()
        }
    };
    let side = match spec.detector.evaluate(c.window.value).map(|b| b.direction) {
        Some(detector::Direction::Below) => "below",
        _ => "above",
    };
    format!(
        "{} {} {:.4} {} {} for {} consecutive {} window(s) (rule {})",
        spec.metric,
        spec.aggregate.as_str(),
        c.window.value,
        side,
        c.threshold,
        spec.confirm,
        window,
        spec.name
    )
}

#[cfg(test)]
mod tests;
