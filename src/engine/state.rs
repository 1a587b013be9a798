//! Keyed state: per rule, per model, per partition.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use super::alert::{AlertState, CompositeState};
use super::detector::{DetectorState, Judgement};
use super::policy::{Policy, RuleSpec};
use super::window::{WindowResult, WindowState};
use crate::detect::Level;
use crate::model::{Action, StatusKind};

/// How many superseded versions a model remembers to ignore stragglers.
const REMEMBERED_VERSIONS: usize = 4;

/// The last evaluated window of a rule, for inspection and evidence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Evaluation {
    pub window: WindowResult,
    pub judgement: Judgement,
}

/// State of one rule for one model.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleState {
    /// Id of the rule definition this state belongs to (0 until a model
    /// places it; see [`ModelState::rebind`]).
    pub id: u64,
    pub window: WindowState,
    pub detector: DetectorState,
    pub alert: AlertState,
    pub last: Option<Evaluation>,
}

impl RuleState {
    pub fn new(spec: &RuleSpec) -> Self {
        RuleState {
            id: 0,
            window: WindowState::new(spec.window, spec.aggregate),
            detector: spec.detector.initial_state(),
            alert: AlertState::default(),
            last: None,
        }
    }

    /// Judges a closed window and records the verdict; true when the rule
    /// is ready to fire (see [`AlertState::observe`]).
    pub fn evaluate(&mut self, spec: &RuleSpec, window: WindowResult) -> bool {
        let judgement = self.detector.judge(&spec.detector, window.value);
        self.last = Some(Evaluation { window, judgement });
        self.alert.observe(&spec.alert, judgement.level, window.end)
    }

    /// The level of the last window judged.
    pub fn level(&self) -> Level {
        self.last.map_or(Level::Stable, |e| e.judgement.level)
    }
}

/// One sample waiting for the watermark: the event's value for each rule
/// (by index in the policy), `None` where the event lacks the metric.
pub type PendingValues = Vec<Option<f64>>;

fn fresh_rules(policy: &Policy) -> Vec<RuleState> {
    policy
        .rules
        .iter()
        .zip(&policy.fingerprints().rule_ids)
        .map(|(spec, id)| RuleState {
            id: *id,
            ..RuleState::new(spec)
        })
        .collect()
}

fn fresh_composites(policy: &Policy) -> Vec<CompositeState> {
    policy
        .fingerprints()
        .composite_ids
        .iter()
        .map(|id| CompositeState {
            id: *id,
            ..CompositeState::default()
        })
        .collect()
}

fn fresh_silences(policy: &Policy) -> Vec<SilenceState> {
    policy
        .fingerprints()
        .silence_ids
        .iter()
        .map(|id| SilenceState {
            id: *id,
            ..SilenceState::default()
        })
        .collect()
}

/// State of one silence rule for one model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SilenceState {
    /// Id of the silence rule definition this state belongs to.
    pub id: u64,
    /// Event time the model was judged silent at (its last event plus the
    /// rule's `after`); `None` while it sends.
    pub silent_since: Option<i64>,
    /// Event time before which the rule may not fire again.
    pub cooldown_until: Option<i64>,
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
    /// Events refused because their time was implausibly far ahead.
    pub future_events: u64,
    /// Events behind the partition's watermark (dead-lettered or dropped).
    pub late_events: u64,
    /// Samples older than a rule's open window (possible only after a
    /// policy change or a restore from an older snapshot).
    pub late_samples: u64,
    /// Windows judged at the warning level.
    pub warning_windows: u64,
    /// Samples dropped because a window was full.
    pub overflow_samples: u64,
    pub requests: u64,
    pub suppressed_while_in_flight: u64,
    pub request_timeouts: u64,
}

/// A model's lineage, held once and shared: the key of the partition's
/// model table and of its indexes, so an index entry costs no allocation.
/// Ordered by a hash of the lineage before the lineage itself, so that
/// models of the same event time (the common case: telemetry arrives in
/// rounds) are told apart by one integer comparison, not a string
/// comparison. The hash is 64-bit FNV-1a, fixed, so the order is the
/// same in every run and build. It hashes (for hash maps) as its lineage
/// does, so a table keyed by it is looked up by `&str`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ModelKey {
    hash: u64,
    lineage: Arc<str>,
}

impl std::hash::Hash for ModelKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.lineage.hash(state);
    }
}

impl std::borrow::Borrow<str> for ModelKey {
    fn borrow(&self) -> &str {
        &self.lineage
    }
}

impl std::fmt::Display for ModelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lineage)
    }
}

impl ModelKey {
    pub fn new(lineage: &str) -> Self {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in lineage.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        ModelKey {
            hash,
            lineage: Arc::from(lineage),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.lineage
    }

    /// The project and the name (a lineage has one `/`: neither part may
    /// contain one).
    fn parts(&self) -> (&str, &str) {
        self.lineage.split_once('/').unwrap_or((&self.lineage, ""))
    }
}

/// Something the partition derives from a model and keeps beside it (an
/// index entry): not state, so it never makes two models unequal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Derived<T>(pub T);

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Which policy of which policy set governs a model, remembered so that
/// the glob patterns are matched once per model, not once per event. A
/// cache, not state: it never makes two models unequal.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyCache(Option<(u64, usize)>);

impl PartialEq for PolicyCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl PolicyCache {
    /// The policy index remembered for the set of `generation`.
    pub fn get(&self, generation: u64) -> Option<usize> {
        self.0.filter(|(g, _)| *g == generation).map(|(_, i)| i)
    }

    pub fn set(&mut self, generation: u64, index: usize) {
        self.0 = Some((generation, index));
    }
}

/// All state of one model (lineage `project/name`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelState {
    /// The lineage (`project/name`), as the partition's table and indexes
    /// hold it.
    pub key: ModelKey,
    /// The policy that governs it, by index in the engine's policy set.
    pub policy_cache: PolicyCache,
    /// When the watermark next changes the model without an event of its
    /// own (its entry in the partition's timers).
    pub(crate) timer: Derived<Option<i64>>,
    /// Listed among the partition's silent models.
    pub(crate) listed_silent: Derived<bool>,
    pub version: Option<String>,
    pub retired_versions: VecDeque<String>,
    /// The pattern of the policy the rules below belong to (the policy's own).
    pub policy: Arc<str>,
    /// Id of the version of that policy (see [`ModelState::rebind`]).
    pub policy_id: u64,
    pub rules: Vec<RuleState>,
    /// State of the policy's composite rules, by index.
    pub composites: Vec<CompositeState>,
    /// State of the policy's silence rules, by index.
    pub silences: Vec<SilenceState>,
    /// Samples accepted but not yet behind the watermark, by (event time,
    /// arrival sequence): they enter the windows in event-time order.
    pub pending: BTreeMap<(i64, u64), PendingValues>,
    /// The unresolved request (boxed: most models have none).
    pub in_flight: Option<Box<InFlight>>,
    /// After a FAILED request: event time before which no new request fires.
    pub backoff_until: Option<i64>,
    pub last_event_at: Option<i64>,
    /// Latest event time at or behind the partition's watermark: silence
    /// and expiry are measured from it, so they depend on event times
    /// only, not on when events arrived.
    pub last_heard_at: Option<i64>,
    pub counters: ModelCounters,
    /// Input offset up to which this state is durable in the changelog:
    /// records of this model below it are already reflected and skipped.
    pub input_offset: i64,
}

impl ModelState {
    /// The lineage `project/name`.
    pub fn lineage(&self) -> &str {
        self.key.as_str()
    }

    pub fn project(&self) -> &str {
        self.key.parts().0
    }

    pub fn name(&self) -> &str {
        self.key.parts().1
    }

    pub fn new(project: &str, name: &str, policy: &Policy) -> Self {
        ModelState::with_key(ModelKey::new(&format!("{project}/{name}")), policy)
    }

    /// A fresh model of lineage `key` under `policy`.
    pub fn with_key(key: ModelKey, policy: &Policy) -> Self {
        ModelState {
            key,
            policy_cache: PolicyCache::default(),
            timer: Derived(None),
            listed_silent: Derived(false),
            version: None,
            retired_versions: VecDeque::new(),
            policy: policy.pattern.clone(),
            policy_id: policy.fingerprints().policy_id,
            rules: fresh_rules(policy),
            composites: fresh_composites(policy),
            silences: fresh_silences(policy),
            pending: BTreeMap::new(),
            in_flight: None,
            backoff_until: None,
            last_event_at: None,
            last_heard_at: None,
            counters: ModelCounters::default(),
            input_offset: 0,
        }
    }

    /// Starts `version` fresh: new rule state (and baselines), the old
    /// version retired, its samples still waiting for the watermark dropped.
    pub fn start_version(&mut self, version: Option<String>, policy: Option<&Policy>) {
        if let Some(old) = self.version.take() {
            if Some(&old) != version.as_ref() {
                self.retired_versions.push_back(old);
                while self.retired_versions.len() > REMEMBERED_VERSIONS {
                    self.retired_versions.pop_front();
                }
            }
        }
        self.version = version;
        self.reset_rules(policy);
    }

    /// Fresh state for every rule and composite of `policy` (none without).
    pub fn reset_rules(&mut self, policy: Option<&Policy>) {
        self.rules = policy.map(fresh_rules).unwrap_or_default();
        self.composites = policy.map(fresh_composites).unwrap_or_default();
        self.pending.clear();
    }

    /// Moves the model under `policy`, a new version of its policy (a
    /// configuration reload) or another policy: the state of every rule and
    /// composite whose definition is unchanged is kept, the others start
    /// fresh. Under another policy, everything starts fresh. Samples waiting
    /// for the watermark are kept only if the rules are exactly the same.
    ///
    /// Does nothing for a model already under this version of `policy`;
    /// returns whether the model moved.
    pub fn rebind(&mut self, policy: &Policy) -> bool {
        let ids = policy.fingerprints();
        if self.policy == policy.pattern && self.policy_id == ids.policy_id {
            return false;
        }
        if self.policy != policy.pattern {
            self.policy = policy.pattern.clone();
            self.reset_rules(Some(policy));
            self.silences = fresh_silences(policy);
        } else {
            let same_rules = self
                .rules
                .iter()
                .map(|r| r.id)
                .eq(ids.rule_ids.iter().copied());
            let mut old: Vec<Option<RuleState>> = std::mem::take(&mut self.rules)
                .into_iter()
                .map(Some)
                .collect();
            self.rules = policy
                .rules
                .iter()
                .zip(&ids.rule_ids)
                .map(|(spec, id)| {
                    old.iter_mut()
                        .find(|o| o.as_ref().is_some_and(|r| r.id == *id))
                        .and_then(Option::take)
                        .unwrap_or(RuleState {
                            id: *id,
                            ..RuleState::new(spec)
                        })
                })
                .collect();
            let old = std::mem::take(&mut self.composites);
            self.composites = ids
                .composite_ids
                .iter()
                .map(|id| {
                    old.iter()
                        .find(|c| c.id == *id)
                        .copied()
                        .unwrap_or(CompositeState {
                            id: *id,
                            ..CompositeState::default()
                        })
                })
                .collect();
            let old = std::mem::take(&mut self.silences);
            self.silences = ids
                .silence_ids
                .iter()
                .map(|id| {
                    old.iter()
                        .find(|s| s.id == *id)
                        .copied()
                        .unwrap_or(SilenceState {
                            id: *id,
                            ..SilenceState::default()
                        })
                })
                .collect();
            if !same_rules {
                self.pending.clear();
            }
        }
        self.policy_id = ids.policy_id;
        true
    }

    /// True when an event of `version` at `timestamp` is a straggler of a
    /// version this model has moved past: a retired version, or an
    /// unknown one older than the model's latest event.
    pub fn is_stale(&self, version: Option<&str>, timestamp: i64) -> bool {
        match (&self.version, version) {
            (_, None) => false,
            (None, Some(_)) if self.counters.events_applied == 0 => false,
            (Some(cur), Some(v)) if cur == v => false,
            (_, Some(v)) if self.retired_versions.iter().any(|r| r == v) => true,
            (_, Some(_)) => self.last_event_at.is_some_and(|t| timestamp < t),
        }
    }

    /// True while any silence rule judges the model silent.
    pub fn is_silent(&self) -> bool {
        self.silences.iter().any(|s| s.silent_since.is_some())
    }

    /// A JSON-friendly view for the HTTP API.
    pub fn view(&self, policy: Option<&Policy>) -> ModelView {
        let specs = policy.map_or(&[][..], |p| p.rules.as_slice());
        let silence_specs = policy.map_or(&[][..], |p| p.silences.as_slice());
        let pending_samples = self.pending.len();
        ModelView {
            model: self.lineage().to_owned(),
            version: self.version.clone(),
            policy: self.policy.to_string(),
            last_event_at: self.last_event_at,
            in_flight: self.in_flight.as_deref().cloned(),
            backoff_until: self.backoff_until,
            counters: self.counters.clone(),
            pending_samples,
            silent: self.is_silent(),
            silence: silence_specs
                .iter()
                .zip(&self.silences)
                .map(|(spec, state)| {
                    (
                        spec.name.clone(),
                        SilenceView {
                            after_ms: spec.after_ms,
                            silent_since: state.silent_since,
                            cooldown_until: state.cooldown_until,
                        },
                    )
                })
                .collect(),
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
                            level: state.level(),
                            confirm: spec.alert.confirm,
                            confirm_of: spec.alert.of,
                            recent_drift_windows: state.alert.drift_count(&spec.alert),
                            in_alarm: state.alert.active,
                            cooldown_until: state.alert.cooldown_until,
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
    /// Samples waiting for the watermark.
    pub pending_samples: usize,
    /// A silence rule judges the model silent now.
    pub silent: bool,
    pub rules: BTreeMap<String, RuleView>,
    pub silence: BTreeMap<String, SilenceView>,
}

/// One silence rule's status inside [`ModelView`].
#[derive(Debug, Clone, Serialize)]
pub struct SilenceView {
    pub after_ms: i64,
    /// Event time the model was judged silent at; `null` while it sends.
    pub silent_since: Option<i64>,
    pub cooldown_until: Option<i64>,
}

/// One rule's status inside [`ModelView`].
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    pub metric: String,
    pub aggregate: &'static str,
    pub detector: &'static str,
    /// Level of the last window judged.
    pub level: Level,
    /// N of N-of-M confirmation.
    pub confirm: u32,
    /// M of N-of-M confirmation.
    pub confirm_of: u32,
    /// Drift verdicts among the last M windows.
    pub recent_drift_windows: u32,
    /// Confirmed and not yet recovered.
    pub in_alarm: bool,
    pub cooldown_until: Option<i64>,
    pub buffered_samples: usize,
    pub last_window: Option<Evaluation>,
}

/// The keyed state of one input partition.
///
/// Besides the models it keeps indexes derived from them (rebuilt after a
/// restore): models by last event time (the least recently seen is evicted
/// at the cap), the time each model next needs the watermark (a window to
/// close, silence, expiry), and which models are silent.
/// A partition's models by lineage (a fast hash: looked up once or twice
/// per event). Boxed, so that growing the table moves pointers, not
/// model states: at a million models a rehash of inline states was a
/// fifth of the time.
pub type ModelMap = FxHashMap<ModelKey, Box<ModelState>>;

#[derive(Debug, Clone, Default)]
pub struct PartitionState {
    pub models: ModelMap,
    /// Latest event time applied in this partition (its stream time).
    pub stream_time: Option<i64>,
    /// Every model's pending samples, by (event time, arrival sequence):
    /// which model to release next when the watermark advances.
    pub(crate) pending: BTreeMap<(i64, u64), ModelKey>,
    pub(crate) next_seq: u64,
    /// The models by last event time, for eviction at the cap.
    pub(crate) by_last_seen: LastSeen,
    /// `(due, model)`: when the watermark reaching `due` changes the
    /// model without an event of its own (each model's own entry is its
    /// `timer`).
    pub(crate) timers: BTreeSet<(i64, ModelKey)>,
    /// Models whose timers are not armed yet (restored, or rebound by a
    /// reload); the engine arms them before it applies anything.
    pub(crate) unarmed: Vec<ModelKey>,
    /// Models judged silent now.
    pub(crate) silent: FxHashSet<ModelKey>,
    /// Times of the latest events refused for being far ahead of the
    /// stream time, while no event within the bound came (see
    /// `Engine::is_future`).
    pub(crate) future_streak: Vec<i64>,
    /// Where the engine writes the lineage of the event it applies (no
    /// allocation per event).
    pub(crate) lineage_buffer: String,
}

/// Two partition states are equal when their models, stream time and
/// waiting samples are: the indexes are derived from those.
impl PartialEq for PartitionState {
    fn eq(&self, other: &Self) -> bool {
        self.models == other.models
            && self.stream_time == other.stream_time
            && self.pending == other.pending
    }
}

impl PartitionState {
    pub fn model(&self, lineage: &str) -> Option<&ModelState> {
        self.models.get(lineage).map(|m| &**m)
    }

    /// Stream time minus the allowed lateness: events before it are late.
    pub fn watermark(&self, allowed_lateness_ms: i64) -> Option<i64> {
        self.stream_time
            .map(|t| t.saturating_sub(allowed_lateness_ms))
    }

    /// The state of a partition whose models were restored.
    pub fn from_restored(models: BTreeMap<String, ModelState>) -> Self {
        let mut state = PartitionState::default();
        for model in models.into_values() {
            state.insert_restored(model);
        }
        state
    }

    /// Adds a restored model: its pending samples rejoin the release order
    /// and its latest event time the stream time.
    pub fn insert_restored(&mut self, mut model: ModelState) {
        for key in model.pending.keys() {
            self.pending.insert(*key, model.key.clone());
            self.next_seq = self.next_seq.max(key.1 + 1);
        }
        if let Some(t) = model.last_event_at {
            self.stream_time = Some(self.stream_time.map_or(t, |s| s.max(t)));
        }
        if let Some(old) = self.remove_model(model.lineage()) {
            // Its waiting samples were re-listed above under the same key.
            drop(old);
        }
        model.timer = Derived(None);
        model.listed_silent = Derived(false);
        if let Some(t) = model.last_event_at {
            self.by_last_seen.insert(t, &model.key);
        }
        sync_silent(&mut self.silent, &mut model);
        self.unarmed.push(model.key.clone());
        self.models.insert(model.key.clone(), Box::new(model));
    }

    /// Samples waiting for the watermark, across models.
    pub fn pending_samples(&self) -> usize {
        self.pending.len()
    }

    /// Models judged silent now, by the pattern of their policy.
    pub fn silent_by_policy(&self) -> BTreeMap<&str, u64> {
        let mut by_policy = BTreeMap::new();
        for key in &self.silent {
            if let Some(model) = self.models.get(key) {
                *by_policy.entry(&*model.policy).or_default() += 1;
            }
        }
        by_policy
    }

    /// Asks for every model's timers to be armed anew (after a reload
    /// changed the policies).
    pub fn rearm_all(&mut self) {
        self.unarmed = self.models.keys().cloned().collect();
    }

    /// Removes a model and every index entry of it. Its samples still
    /// waiting in the release order are skipped when their turn comes.
    pub(crate) fn remove_model(&mut self, lineage: &str) -> Option<ModelState> {
        let model = self.models.remove(lineage)?;
        if let Some(t) = model.last_event_at {
            self.by_last_seen.remove(t, &model.key);
        }
        if let Some(t) = model.timer.0 {
            self.timers.remove(&(t, model.key.clone()));
        }
        self.silent.remove(lineage);
        Some(*model)
    }
}

/// Records that `model`'s last event time moved from `old` to its
/// current one.
pub(crate) fn touch(by_last_seen: &mut LastSeen, model: &ModelState, old: Option<i64>) {
    let Some(new) = model.last_event_at else {
        return;
    };
    if old == Some(new) {
        return;
    }
    if let Some(t) = old {
        by_last_seen.remove(t, &model.key);
    }
    by_last_seen.insert(new, &model.key);
}

/// `(last event time, model)` of every model, ordered: the least recently
/// seen is evicted at the cap. Built when a partition first needs an
/// eviction and kept from then on; below the cap nothing asks for it,
/// and keeping it costs two tree updates per event.
#[derive(Debug, Clone, Default)]
pub(crate) struct LastSeen(Option<BTreeSet<(i64, ModelKey)>>);

impl LastSeen {
    fn insert(&mut self, t: i64, key: &ModelKey) {
        if let Some(set) = &mut self.0 {
            set.insert((t, key.clone()));
        }
    }

    fn remove(&mut self, t: i64, key: &ModelKey) {
        if let Some(set) = &mut self.0 {
            set.remove(&(t, key.clone()));
        }
    }

    /// The models, least recently seen first (building the index from
    /// `models` the first time).
    pub(crate) fn oldest(&mut self, models: &ModelMap) -> impl Iterator<Item = &ModelKey> + Clone {
        self.0
            .get_or_insert_with(|| {
                models
                    .values()
                    .filter_map(|m| Some((m.last_event_at?, m.key.clone())))
                    .collect()
            })
            .iter()
            .map(|(_, key)| key)
    }

    /// The entries, once built.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> impl Iterator<Item = &(i64, ModelKey)> {
        self.0.iter().flatten()
    }
}

/// Registers when `model` next needs the watermark (`None`: never).
pub(crate) fn set_timer(
    timers: &mut BTreeSet<(i64, ModelKey)>,
    model: &mut ModelState,
    due: Option<i64>,
) {
    if model.timer.0 == due {
        return;
    }
    if let Some(t) = model.timer.0 {
        timers.remove(&(t, model.key.clone()));
    }
    if let Some(t) = due {
        timers.insert((t, model.key.clone()));
    }
    model.timer = Derived(due);
}

/// Keeps the set of silent models in step with `model`'s state.
pub(crate) fn sync_silent(silent: &mut FxHashSet<ModelKey>, model: &mut ModelState) {
    let is_silent = model.is_silent();
    if model.listed_silent.0 == is_silent {
        return;
    }
    if is_silent {
        silent.insert(model.key.clone());
    } else {
        silent.remove(&model.key);
    }
    model.listed_silent = Derived(is_silent);
}
