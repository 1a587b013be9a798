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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use smallvec::SmallVec;

use crate::detect::Level;
use crate::model::{Action, EventView, ModelRef, RetrainRequest, RetrainStatus, StatusKind};
use detector::{DetectorSpec, Direction, Judgement};
use policy::{Policy, PolicySet, RuleSpec, WindowSpec};
use state::{InFlight, ModelKey, ModelState, PartitionState};
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
    /// How far ahead of its reference (the Kafka record's timestamp, or
    /// else the partition's stream time) an event's time may be; later
    /// events are refused as `future_timestamp` and move no watermark.
    /// 0 turns the guard off.
    pub max_clock_skew_ms: i64,
    /// Event time without an event after which a model's state is
    /// removed (partition watermark minus its last event). 0: never.
    pub idle_timeout_ms: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_models_per_partition: 100_000,
            allowed_lateness_ms: 0,
            max_clock_skew_ms: 3_600_000,
            idle_timeout_ms: 7 * 24 * 3_600_000,
        }
    }
}

/// Events beyond the stream-time bound (no record time) that, in a row
/// and agreeing with each other, show the partition's clock really moved.
pub const FUTURE_CONFIRMATIONS: usize = 3;

/// How many of the least recently seen models eviction looks through for
/// one without a request in flight.
const EVICTION_SCAN: usize = 64;

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
    /// The event's time is implausibly far ahead of its reference (see
    /// [`Limits::max_clock_skew_ms`]): a broken clock must not move the
    /// watermark.
    FutureTimestamp,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoPolicy => "no_policy",
            SkipReason::TooLate => "too_late",
            SkipReason::StaleVersion => "stale_version",
            SkipReason::FutureTimestamp => "future_timestamp",
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
        released: Vec<ModelKey>,
        /// Models removed: expired, or evicted to make room for this one.
        removed: Vec<Removed>,
        /// Models judged silent as the watermark advanced.
        silenced: Vec<Silenced>,
    },
    Skipped(SkipReason),
}

/// Why a model's state was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalCause {
    /// No event for `idle_timeout` of event time.
    Expired,
    /// The least recently seen model, at the partition's model cap.
    Evicted,
}

impl RemovalCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RemovalCause::Expired => "expired",
            RemovalCause::Evicted => "evicted",
        }
    }
}

/// A model whose state was removed from its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub lineage: String,
    pub cause: RemovalCause,
    pub last_event_at: Option<i64>,
}

/// A model a silence rule judged silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silenced {
    pub lineage: String,
    pub rule: String,
    pub last_event_at: i64,
}

/// What the watermark's advance did, gathered for one event's outcome.
#[derive(Default)]
struct Progress {
    requests: Vec<RetrainRequest>,
    changed: Vec<ModelKey>,
    removed: Vec<Removed>,
    silenced: Vec<Silenced>,
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
    Silence(usize),
}

impl Candidate {
    fn name<'p>(&self, policy: &'p Policy) -> &'p str {
        match self.source {
            Source::Rule(i) => &policy.rules[i].name,
            Source::Composite(j) => &policy.composites[j].name,
            Source::Silence(k) => &policy.silences[k].name,
        }
    }

    fn action(&self, policy: &Policy) -> Action {
        match self.source {
            Source::Rule(i) => policy.rules[i].action.unwrap_or(Action::FineTune),
            Source::Composite(j) => policy.composites[j].action,
            Source::Silence(k) => policy.silences[k].action.unwrap_or(Action::FineTune),
        }
    }

    /// Configuration order: rules, then composite rules.
    fn order(&self, policy: &Policy) -> usize {
        match self.source {
            Source::Rule(i) => i,
            Source::Composite(j) => policy.rules.len() + j,
            Source::Silence(k) => policy.rules.len() + policy.composites.len() + k,
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

    /// The policy that governs `model`: the one it remembers, if that
    /// belongs to this engine's policy set, else by matching its lineage.
    pub fn policy_of(&self, model: &ModelState) -> Option<&Policy> {
        match model.policy_cache.get(self.policies.generation()) {
            Some(index) => self.policies.get(index),
            None => self.policies.for_lineage(model.lineage()),
        }
    }

    /// Applies one valid event (see [`MetricEvent::validate`]) to the state
    /// of the partition it was read from, as a replay does: with no record
    /// time, the clock-skew guard judges the event against the partition's
    /// stream time.
    pub fn apply_event(&self, part: &mut PartitionState, event: &impl EventView) -> EventOutcome {
        self.apply(part, event, None, None)
    }

    /// Applies an event read from a Kafka record whose own timestamp is
    /// `record_time` (producer or broker time): the clock-skew guard judges
    /// the event time against it.
    pub fn apply_record(
        &self,
        part: &mut PartitionState,
        event: &impl EventView,
        record_time: Option<i64>,
    ) -> EventOutcome {
        self.apply(part, event, record_time, None)
    }

    /// [`Engine::apply_event`], also recording every window judged (for
    /// reports) in `trace`.
    pub fn apply_event_traced(
        &self,
        part: &mut PartitionState,
        event: &impl EventView,
        trace: Option<&mut Vec<Judged>>,
    ) -> EventOutcome {
        self.apply(part, event, None, trace)
    }

    fn apply<E: EventView>(
        &self,
        part: &mut PartitionState,
        event: &E,
        record_time: Option<i64>,
        trace: Option<&mut Vec<Judged>>,
    ) -> EventOutcome {
        self.arm_unarmed(part);
        let mut lineage = std::mem::take(&mut part.lineage_buffer);
        event.write_lineage(&mut lineage);
        let outcome = self.apply_to(part, &lineage, event, record_time, trace);
        part.lineage_buffer = lineage;
        outcome
    }

    /// [`Engine::apply`] for the model `lineage` (the event's): the model
    /// is looked up once before the watermark advances and once after.
    fn apply_to<E: EventView>(
        &self,
        part: &mut PartitionState,
        lineage: &str,
        event: &E,
        record_time: Option<i64>,
        mut trace: Option<&mut Vec<Judged>>,
    ) -> EventOutcome {
        let timestamp = event.timestamp();
        let generation = self.policies.generation();
        let known = part.models.get(lineage).map(|m| {
            (
                m.policy_cache.get(generation),
                m.is_stale(event.version(), timestamp),
            )
        });
        let cached = known.and_then(|(cached, _)| cached);
        let Some(policy_index) = cached.or_else(|| self.policies.index_for(lineage)) else {
            return EventOutcome::Skipped(SkipReason::NoPolicy);
        };
        let Some(policy) = self.policies.get(policy_index) else {
            return EventOutcome::Skipped(SkipReason::NoPolicy);
        };
        if self.is_future(part, timestamp, record_time) {
            if let Some(model) = part.models.get_mut(lineage) {
                model.counters.future_events += 1;
            }
            return EventOutcome::Skipped(SkipReason::FutureTimestamp);
        }
        let lateness = self.limits.allowed_lateness_ms;
        if part.watermark(lateness).is_some_and(|w| timestamp < w) {
            if let Some(model) = part.models.get_mut(lineage) {
                model.counters.late_events += 1;
            }
            return EventOutcome::Skipped(SkipReason::TooLate);
        }
        if known.is_some_and(|(_, stale)| stale) {
            return EventOutcome::Skipped(SkipReason::StaleVersion);
        }

        // The event moves the stream time; everything due up to the new
        // watermark happens first, at its own event time (windows close,
        // models go silent or expire), this model included.
        let stream_time = part.stream_time.map_or(timestamp, |t| t.max(timestamp));
        part.stream_time = Some(stream_time);
        let watermark = stream_time.saturating_sub(lateness);
        let mut progress = Progress::default();
        self.advance(part, watermark, &mut progress, trace.as_deref_mut());

        // Only a removal (expiry, which may also start the model afresh)
        // changes whether the model is held.
        let held = if progress.removed.is_empty() {
            known.is_some()
        } else {
            part.models.contains_key(lineage)
        };
        let new_model = !held;
        if new_model {
            if part.models.len() >= self.limits.max_models_per_partition {
                self.evict_one(part, &mut progress);
            }
            let model = ModelState::with_key(ModelKey::new(lineage), policy);
            part.models.insert(model.key.clone(), Box::new(model));
        }
        let PartitionState {
            models,
            pending,
            next_seq,
            by_last_seen,
            timers,
            silent,
            ..
        } = part;
        let Some(model) = models.get_mut(lineage) else {
            return EventOutcome::Skipped(SkipReason::NoPolicy);
        };
        if model.policy_cache.get(generation) != Some(policy_index) {
            // Another policy, or a new version of it (configuration reload).
            model.rebind(policy);
            model.policy_cache.set(generation, policy_index);
        }

        // Version handling: a new version starts fresh (stragglers of a
        // superseded version were refused above).
        match (&model.version, event.version()) {
            (_, None) => {}
            (None, Some(v)) if model.counters.events_applied == 0 => {
                model.version = Some(v.to_owned());
            }
            (Some(cur), Some(v)) if cur == v => {}
            (_, Some(v)) => model.start_version(Some(v.to_owned()), Some(policy)),
        }

        model.counters.events_applied += 1;
        let previous = model.last_event_at;
        model.last_event_at = Some(previous.map_or(timestamp, |t| t.max(timestamp)));

        let values: SmallVec<[Option<f64>; 8]> = policy
            .rules
            .iter()
            .map(|rule| event.value(&rule.metric))
            .collect();
        // Every event is heard (ending a silence, deferring expiry) at its
        // own event time, when the watermark reaches it.
        if timestamp <= watermark {
            // Everything up to the watermark is done and nothing else is
            // due at this time (always so without lateness): straight into
            // the windows.
            progress
                .requests
                .extend(self.process_sample(model, policy, timestamp, &values, trace));
        } else {
            let key = (timestamp, *next_seq);
            *next_seq += 1;
            model.pending.insert(key, values.to_vec());
            pending.insert(key, model.key.clone());
        }
        state::touch(by_last_seen, model, previous);
        self.rearm_model(timers, model, Some(policy));
        state::sync_silent(silent, model);

        let mut released = progress.changed;
        released.retain(|l| l.as_str() != lineage);
        released.sort_unstable();
        released.dedup();
        EventOutcome::Applied {
            requests: progress.requests,
            new_model,
            released,
            removed: progress.removed,
            silenced: progress.silenced,
        }
    }

    /// The clock-skew guard: true when `timestamp` is implausibly far ahead
    /// (more than `max_clock_skew_ms`). The reference is the record's own
    /// timestamp when there is one. Without one (a replay file), it is the
    /// partition's stream time; so that a real gap in the telemetry does
    /// not shut the partition out for good, the
    /// [`FUTURE_CONFIRMATIONS`]th consecutive event beyond that bound whose
    /// times agree (within the skew) is taken as the clock having really
    /// moved, and is applied.
    fn is_future(
        &self,
        part: &mut PartitionState,
        timestamp: i64,
        record_time: Option<i64>,
    ) -> bool {
        let skew = self.limits.max_clock_skew_ms;
        if skew <= 0 {
            return false;
        }
        if let Some(reference) = record_time {
            return timestamp > reference.saturating_add(skew);
        }
        let Some(stream_time) = part.stream_time else {
            return false;
        };
        if timestamp <= stream_time.saturating_add(skew) {
            part.future_streak.clear();
            return false;
        }
        part.future_streak
            .retain(|t| t.abs_diff(timestamp) <= skew.unsigned_abs());
        part.future_streak.push(timestamp);
        if part.future_streak.len() >= FUTURE_CONFIRMATIONS {
            part.future_streak.clear();
            return false;
        }
        true
    }

    /// Arms the timers of restored or rebound models.
    fn arm_unarmed(&self, part: &mut PartitionState) {
        if part.unarmed.is_empty() {
            return;
        }
        for key in std::mem::take(&mut part.unarmed) {
            self.rearm(part, key.as_str());
        }
    }

    /// Registers when `lineage` next needs the watermark, and whether it
    /// is silent.
    fn rearm(&self, part: &mut PartitionState, lineage: &str) {
        let PartitionState {
            models,
            timers,
            silent,
            ..
        } = part;
        if let Some(model) = models.get_mut(lineage) {
            self.rearm_model(timers, model, self.policy_of(model));
            state::sync_silent(silent, model);
        }
    }

    /// Registers when `model`, governed by `policy`, next needs the
    /// watermark.
    fn rearm_model(
        &self,
        timers: &mut BTreeSet<(i64, ModelKey)>,
        model: &mut ModelState,
        policy: Option<&Policy>,
    ) {
        let due = self.next_due(model, policy);
        state::set_timer(timers, model, due);
    }

    /// The earliest event time at which the watermark changes `model`
    /// without an event of its own: a window holding samples ends, a
    /// silence rule's `after` passes, or the model expires (not while a
    /// request is in flight and not timed out).
    fn next_due(&self, model: &ModelState, policy: Option<&Policy>) -> Option<i64> {
        let windows = model.rules.iter().filter_map(|r| r.window.next_end()).min();
        match (windows, self.quiet_due(model, policy)) {
            (Some(w), Some(q)) => Some(w.min(q)),
            (w, q) => w.or(q),
        }
    }

    /// When the model's quiet since its last event next matters: a silence
    /// rule becomes due, or the model expires.
    fn quiet_due(&self, model: &ModelState, policy: Option<&Policy>) -> Option<i64> {
        let last = model.last_heard_at?;
        let mut due = None;
        let mut earliest = |t: i64| due = Some(due.map_or(t, |d: i64| d.min(t)));
        if let Some(policy) = policy {
            for (spec, state) in policy.silences.iter().zip(&model.silences) {
                if state.silent_since.is_none() {
                    earliest(last.saturating_add(spec.after_ms));
                }
            }
        }
        if self.limits.idle_timeout_ms > 0 {
            earliest(self.expires_at(model, policy, last));
        }
        due
    }

    /// When `model`, last seen at `last`, expires: `idle_timeout` after its
    /// last event, but not before its request in flight times out.
    fn expires_at(&self, model: &ModelState, policy: Option<&Policy>, last: i64) -> i64 {
        let idle = last.saturating_add(self.limits.idle_timeout_ms);
        match (&model.in_flight, policy) {
            (Some(flight), Some(policy)) => {
                idle.max(flight.issued_at.saturating_add(policy.request_timeout_ms))
            }
            _ => idle,
        }
    }

    /// Processes, in event-time order, every waiting sample and every timer
    /// at or before `watermark`. A timer comes before a sample of the same
    /// time (a window ending at t closes before a sample at t opens the
    /// next). The order depends only on event times, never on delivery.
    fn advance(
        &self,
        part: &mut PartitionState,
        watermark: i64,
        progress: &mut Progress,
        mut trace: Option<&mut Vec<Judged>>,
    ) {
        loop {
            let sample = part
                .pending
                .first_key_value()
                .map(|(k, _)| k.0)
                .filter(|t| *t <= watermark);
            let timer = part
                .timers
                .first()
                .map(|(t, _)| *t)
                .filter(|t| *t <= watermark);
            match (sample, timer) {
                (None, None) => return,
                (Some(s), Some(t)) if s < t => {
                    self.release_one(part, progress, trace.as_deref_mut())
                }
                (Some(_), None) => self.release_one(part, progress, trace.as_deref_mut()),
                (_, Some(_)) => self.run_timer(part, progress, trace.as_deref_mut()),
            }
        }
    }

    /// Feeds the earliest waiting sample into its model's windows.
    fn release_one(
        &self,
        part: &mut PartitionState,
        progress: &mut Progress,
        trace: Option<&mut Vec<Judged>>,
    ) {
        let Some((key, model_key)) = part.pending.pop_first() else {
            return;
        };
        let PartitionState {
            models,
            timers,
            silent,
            ..
        } = part;
        // Entries of a model that restarted (new version) or was removed
        // are gone.
        let Some(model) = models.get_mut(model_key.as_str()) else {
            return;
        };
        let Some(values) = model.pending.remove(&key) else {
            return;
        };
        let Some(policy) = self.policy_of(model) else {
            return;
        };
        if values.len() == policy.rules.len() {
            progress
                .requests
                .extend(self.process_sample(model, policy, key.0, &values, trace));
        }
        self.rearm_model(timers, model, Some(policy));
        state::sync_silent(silent, model);
        progress.changed.push(model_key);
    }

    /// Runs the earliest timer: the model's windows ending then close, its
    /// silence rules due then judge it silent, or it expires.
    fn run_timer(
        &self,
        part: &mut PartitionState,
        progress: &mut Progress,
        trace: Option<&mut Vec<Judged>>,
    ) {
        let Some((at, key)) = part.timers.pop_first() else {
            return;
        };
        if let Some(model) = part.models.get_mut(key.as_str()) {
            model.timer = state::Derived(None);
        }
        self.run_timer_at(part, at, key, progress, trace);
    }

    /// Runs what is due for model `key` at `at` (its timer already taken).
    fn run_timer_at(
        &self,
        part: &mut PartitionState,
        at: i64,
        key: ModelKey,
        progress: &mut Progress,
        trace: Option<&mut Vec<Judged>>,
    ) {
        let Some(model) = part.models.get_mut(key.as_str()) else {
            return;
        };
        let policy = self.policy_of(model);
        let mut expire = false;
        if let Some(policy) = policy {
            let mut closed = Vec::new();
            let mut window = Vec::new();
            for (index, (spec, rule)) in policy.rules.iter().zip(model.rules.iter_mut()).enumerate()
            {
                window.clear();
                rule.window.close_until(at, spec.aggregate, &mut window);
                closed.extend(window.iter().map(|w| (index, *w)));
            }
            let mut silenced = Vec::new();
            if let Some(last) = model.last_heard_at {
                for (k, (spec, state)) in policy
                    .silences
                    .iter()
                    .zip(model.silences.iter_mut())
                    .enumerate()
                {
                    let since = last.saturating_add(spec.after_ms);
                    if state.silent_since.is_none() && since <= at {
                        state.silent_since = Some(since);
                        silenced.push(k);
                        progress.silenced.push(Silenced {
                            lineage: key.as_str().to_owned(),
                            rule: spec.name.clone(),
                            last_event_at: last,
                        });
                    }
                }
            }
            progress
                .requests
                .extend(self.judge(model, policy, at, &closed, &silenced, trace));
        }
        if self.limits.idle_timeout_ms > 0 {
            if let Some(last) = model.last_heard_at {
                expire = self.expires_at(model, policy, last) <= at;
            }
        }
        if expire {
            if let Some(old) = part.remove_model(key.as_str()) {
                progress.removed.push(Removed {
                    lineage: key.as_str().to_owned(),
                    cause: RemovalCause::Expired,
                    last_event_at: old.last_heard_at,
                });
                // Events after the expiry that wait for the watermark
                // belong to the model's next life: it starts afresh.
                if let (false, Some(policy)) = (old.pending.is_empty(), policy) {
                    let mut fresh = ModelState::with_key(old.key, policy);
                    fresh.version = old.version;
                    fresh.pending = old.pending;
                    fresh.last_event_at = old.last_event_at;
                    state::touch(&mut part.by_last_seen, &fresh, None);
                    part.models.insert(key.clone(), Box::new(fresh));
                    progress.changed.push(key);
                }
            }
            return;
        }
        let PartitionState { timers, silent, .. } = part;
        self.rearm_model(timers, model, policy);
        state::sync_silent(silent, model);
        progress.changed.push(key);
    }

    /// Makes room for a new model at the partition's cap: removes the
    /// least recently seen model (by event time), passing over models with
    /// a request in flight among the oldest few.
    fn evict_one(&self, part: &mut PartitionState, progress: &mut Progress) {
        let victim = {
            let PartitionState {
                models,
                by_last_seen,
                ..
            } = part;
            let mut oldest = by_last_seen.oldest(models);
            let first = oldest.clone().next();
            oldest
                .by_ref()
                .take(EVICTION_SCAN)
                .find(|key| {
                    models
                        .get(key.as_str())
                        .is_some_and(|m| m.in_flight.is_none())
                })
                .or(first)
                .map(|key| key.as_str().to_owned())
        };
        let Some(lineage) = victim else {
            return;
        };
        if let Some(model) = part.remove_model(&lineage) {
            progress.removed.push(Removed {
                lineage,
                cause: RemovalCause::Evicted,
                last_event_at: model.last_event_at,
            });
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
        trace: Option<&mut Vec<Judged>>,
    ) -> Option<RetrainRequest> {
        // The model is heard from at this event time: silence ends.
        model.last_heard_at = Some(model.last_heard_at.map_or(timestamp, |t| t.max(timestamp)));
        for silence in &mut model.silences {
            silence.silent_since = None;
        }
        let mut closed = Vec::new();
        let mut window = Vec::new();
        for (index, (spec, rule)) in policy.rules.iter().zip(model.rules.iter_mut()).enumerate() {
            let Some(value) = values.get(index).copied().flatten() else {
                continue;
            };
            window.clear();
            match rule
                .window
                .push(timestamp, value, spec.aggregate, &mut window)
            {
                Placement::Accepted => {}
                Placement::TooLate => model.counters.late_samples += 1,
                Placement::Overflow => model.counters.overflow_samples += 1,
            }
            closed.extend(window.iter().map(|w| (index, *w)));
        }
        self.judge(model, policy, timestamp, &closed, &[], trace)
    }

    /// Judges the windows that closed at event time `at` (by rule index)
    /// and the silence rules that became due then: detector verdicts, alert
    /// logic, composites, then at most one request, gated by the request in
    /// flight and the back-off.
    fn judge(
        &self,
        model: &mut ModelState,
        policy: &Policy,
        at: i64,
        closed: &[(usize, WindowResult)],
        silenced: &[usize],
        mut trace: Option<&mut Vec<Judged>>,
    ) -> Option<RetrainRequest> {
        // An unresolved request stops blocking once its timeout has passed.
        if let Some(flight) = &model.in_flight {
            if at >= flight.issued_at.saturating_add(policy.request_timeout_ms) {
                model.in_flight = None;
                model.counters.request_timeouts += 1;
            }
        }

        let mut candidates = Vec::new();
        for (index, window) in closed {
            let (index, window) = (*index, *window);
            let (Some(spec), Some(rule)) = (policy.rules.get(index), model.rules.get_mut(index))
            else {
                continue;
            };
            let ready = rule.evaluate(spec, window);
            if let (Some(trace), Some(last)) = (trace.as_deref_mut(), rule.last) {
                trace.push(Judged {
                    lineage: model.key.as_str().to_owned(),
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
                    window,
                    judgement: rule.last.map(|e| e.judgement),
                });
            }
        }
        if !closed.is_empty() {
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
        for &k in silenced {
            let (Some(spec), Some(state)) = (policy.silences.get(k), model.silences.get(k)) else {
                continue;
            };
            let cooled = state.cooldown_until.is_none_or(|until| at >= until);
            let (Some(_), Some(since), true) = (spec.action, state.silent_since, cooled) else {
                continue;
            };
            let last = since.saturating_sub(spec.after_ms);
            candidates.push(Candidate {
                source: Source::Silence(k),
                window: WindowResult {
                    start: last,
                    end: since,
                    value: (at - last) as f64,
                    samples: 0,
                },
                judgement: None,
            });
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
            project: model.project().to_owned(),
            name: model.name().to_owned(),
            version: model.version.clone(),
        };
        let request_id = request_id(&model_ref, &fired, primary.window.start, triggered_at);
        let mut evidence = BTreeMap::new();
        evidence.insert("policy".to_owned(), policy.pattern.to_string());
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
                Source::Silence(k) => {
                    if let Some(state) = model.silences.get_mut(k) {
                        state.cooldown_until =
                            Some(c.window.end.saturating_add(policy.silences[k].cooldown_ms));
                    }
                }
            }
        }
        let action = primary.action(policy);
        model.counters.requests += 1;
        model.in_flight = Some(Box::new(InFlight {
            request_id: request_id.clone(),
            action,
            issued_at: triggered_at,
            last_status: None,
        }));
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
            Source::Silence(k) => (
                "silence".to_owned(),
                SILENCE_METRIC.to_owned(),
                policy.silences[k].after_ms as f64,
            ),
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
        self.arm_unarmed(part);
        let lineage = status.model.lineage();
        let Some(model) = part.models.get_mut(lineage.as_str()) else {
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
            // Its expiry waited for the request: due again now.
            self.rearm(part, &lineage);
        } else if let Some(flight) = &mut model.in_flight {
            flight.last_status = Some(status.status);
        }
        StatusOutcome::Applied
    }

    fn resolve(&self, model: &mut ModelState, status: StatusKind, new_version: Option<String>) {
        let issued_at = model.in_flight.take().map_or(i64::MIN, |f| f.issued_at);
        let policy = self.policy_of(model);
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

/// The `metric` of a request fired by a silence rule: the model's events.
pub const SILENCE_METRIC: &str = "events";

fn duration_words(ms: i64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms.max(0) as u64)).to_string()
}

fn window_words(spec: &RuleSpec) -> String {
    match spec.window {
        WindowSpec::Count { size } => format!("{size}-sample"),
        WindowSpec::Tumbling { size_ms } | WindowSpec::Sliding { size_ms, .. } => {
            duration_words(size_ms)
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
        Source::Silence(k) => {
            let spec = &policy.silences[k];
            format!(
                "no telemetry for {} since event time {}: the model went silent (rule {})",
                duration_words(spec.after_ms),
                c.window.start,
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
        Source::Silence(_) => format!(
            "{}; silent for {} ms, action {}",
            reason(policy, c),
            c.window.value,
            c.action(policy).as_str()
        ),
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
mod lifecycle_tests;
#[cfg(test)]
mod tests;
