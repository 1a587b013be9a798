//! State the Kafka shell keeps around the engine: one slot per assigned
//! partition (keyed state plus offset bookkeeping), which partition owns
//! each model, and recent terminal statuses by request id.
//!
//! Shared between the consumer thread (which mutates it between polls), the
//! rebalance callbacks (which run inside those polls) and the HTTP handlers,
//! behind one mutex that is never held across a poll or a wait for the
//! broker. Readiness is also published outside the lock ([`Readiness`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use rdkafka::producer::DeliveryFuture;
use rustc_hash::{FxHashMap, FxHashSet};

use super::phase::{Phase, SlotPhase, Transition};
use super::readiness::Readiness;
use super::step::Output;
use crate::engine::state::{ModelKey, ModelState, ModelView, PartitionState};
use crate::engine::Engine;
use crate::model::RetrainStatus;
use crate::telemetry::Metrics;

/// Terminal statuses remembered by request id.
const MAX_BOOKED_STATUSES: usize = 100_000;

/// `(topic, partition)`.
pub type TopicPartition = (String, i32);

/// A record's output that the broker has not acknowledged yet
/// (at-least-once mode; in exactly-once mode the transaction commit waits).
pub struct PendingOutput {
    pub topic: String,
    pub delivery: DeliveryFuture,
}

/// One assigned input partition.
pub struct Slot {
    pub state: PartitionState,
    /// Restoring (paused) or running.
    pub phase: SlotPhase,
    /// Which assignment of the partition this slot belongs to: a restore
    /// read for an earlier assignment (revoked and assigned again since)
    /// is not installed into this one.
    pub assignment: u64,
    /// The offset after the last record processed since assignment.
    pub processed_next: Option<i64>,
    /// The last offset committed (or stored for commit).
    pub committed_next: Option<i64>,
    /// What the records applied asked to write, not yet handed to the
    /// producer.
    pub outbox: Vec<Output>,
    /// Written, not yet acknowledged.
    pub pending: Vec<PendingOutput>,
    /// Models changed since their last snapshot.
    pub dirty: FxHashSet<ModelKey>,
    /// A record key that is not its model's lineage was logged once here.
    pub key_mismatch_logged: bool,
    /// The highest input offset a restored snapshot reflects: records
    /// below it may be reflected already and are checked against their
    /// model's snapshot; records at or above it never are (no look-up).
    pub restored_until: i64,
}

impl Slot {
    /// The slot of a newly assigned partition: its state must first be
    /// restored.
    pub fn restoring(assignment: u64) -> Self {
        Slot {
            state: PartitionState::default(),
            phase: SlotPhase::Restoring { refetch_from: None },
            assignment,
            processed_next: None,
            committed_next: None,
            outbox: Vec::new(),
            pending: Vec::new(),
            dirty: FxHashSet::default(),
            key_mismatch_logged: false,
            restored_until: 0,
        }
    }

    /// A running slot with empty state (tests of the shell's step).
    #[cfg(test)]
    pub fn running(assignment: u64) -> Self {
        Slot {
            phase: SlotPhase::Running,
            ..Slot::restoring(assignment)
        }
    }

    /// Marks a model changed since its last snapshot (no allocation when
    /// it already is).
    pub fn mark_dirty(&mut self, lineage: &str) {
        if !self.dirty.contains(lineage) {
            let key = match self.state.models.get_key_value(lineage) {
                Some((key, _)) => key.clone(),
                None => ModelKey::new(lineage),
            };
            self.dirty.insert(key);
        }
    }

    /// The offset to commit, if it moves forward.
    pub fn commit_candidate(&self) -> Option<i64> {
        match (self.processed_next, self.committed_next) {
            (Some(next), Some(done)) if next <= done => None,
            (next, _) => next,
        }
    }

    /// True when nothing processed is waiting to become durable.
    pub fn settled(&self) -> bool {
        self.outbox.is_empty()
            && self.pending.is_empty()
            && self.dirty.is_empty()
            && self.commit_candidate().is_none()
    }
}

/// Which partition holds each model's state. The partitions are kept once
/// and the models refer to them by index: at a million models a
/// `(topic, partition)` per model would be a million topic strings.
#[derive(Default)]
pub struct Owners {
    /// The key the model's partition holds (shared, not a copy).
    by_lineage: FxHashMap<ModelKey, u32>,
    partitions: Vec<TopicPartition>,
}

/// Where a model's state turned up relative to earlier partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    First,
    /// The model already lives on another partition (bad producer keying).
    Split {
        other: TopicPartition,
    },
}

impl Owners {
    fn index_of(&mut self, tp: &TopicPartition) -> u32 {
        match self.find(tp) {
            Some(i) => i,
            None => {
                self.partitions.push(tp.clone());
                u32::try_from(self.partitions.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    fn find(&self, tp: &TopicPartition) -> Option<u32> {
        self.partitions
            .iter()
            .position(|p| p == tp)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Records that `lineage` now has state on `tp`. Entries of released
    /// partitions are removed, so any other owner found is still assigned.
    pub fn claim(&mut self, lineage: &ModelKey, tp: &TopicPartition) -> Ownership {
        let index = self.index_of(tp);
        match self.by_lineage.get(lineage.as_str()) {
            Some(&other) if other != index => Ownership::Split {
                other: self.partitions[other as usize].clone(),
            },
            Some(_) => Ownership::First,
            None => {
                self.by_lineage.insert(lineage.clone(), index);
                Ownership::First
            }
        }
    }

    pub fn get(&self, lineage: &str) -> Option<&TopicPartition> {
        let index = *self.by_lineage.get(lineage)?;
        self.partitions.get(index as usize)
    }

    /// Forgets one model of `tp` (its state was removed).
    pub fn forget(&mut self, lineage: &str, tp: &TopicPartition) {
        if let Some(index) = self.find(tp) {
            if self.by_lineage.get(lineage) == Some(&index) {
                self.by_lineage.remove(lineage);
            }
        }
    }

    /// Forgets the models of a released partition.
    pub fn release(&mut self, tp: &TopicPartition, state: &PartitionState) {
        let Some(index) = self.find(tp) else {
            return;
        };
        for key in state.models.keys() {
            if self.by_lineage.get(key.as_str()) == Some(&index) {
                self.by_lineage.remove(key.as_str());
            }
        }
    }
}

/// Recent terminal statuses by request id (bounded, oldest evicted first).
/// A request re-derived while rebuilding state, after its status was read,
/// is resolved from here.
#[derive(Default)]
pub struct StatusBook {
    by_request: HashMap<String, RetrainStatus>,
    order: VecDeque<String>,
}

impl StatusBook {
    pub fn insert(&mut self, status: RetrainStatus) {
        let id = status.request_id.clone();
        if self.by_request.insert(id.clone(), status).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > MAX_BOOKED_STATUSES {
            if let Some(old) = self.order.pop_front() {
                self.by_request.remove(&old);
            }
        }
    }

    pub fn get(&self, request_id: &str) -> Option<&RetrainStatus> {
        self.by_request.get(request_id)
    }
}

/// Everything the shell tracks, behind one mutex.
pub struct Shell {
    pub engine: Engine,
    pub slots: BTreeMap<TopicPartition, Slot>,
    pub owners: Owners,
    pub book: StatusBook,
    /// Set once the first assignment (possibly empty) arrived.
    assigned_once: bool,
    /// Where the work stands (transaction, rewind, failure); changed only
    /// through [`Shell::transition`].
    phase: Phase,
    /// Assignments made so far (numbers each slot's).
    assignments: u64,
    /// Readiness as of the latest change of the assignment, for readers
    /// that must not take the lock.
    readiness: Arc<Readiness>,
}

impl Shell {
    pub fn new(engine: Engine) -> Self {
        Shell {
            engine,
            slots: BTreeMap::new(),
            owners: Owners::default(),
            book: StatusBook::default(),
            assigned_once: false,
            phase: Phase::Idle,
            assignments: 0,
            readiness: Arc::new(Readiness::default()),
        }
    }

    /// The readiness this shell publishes whenever its assignment changes.
    pub fn readiness(&self) -> Arc<Readiness> {
        Arc::clone(&self.readiness)
    }

    /// Whether the first assignment (possibly empty) arrived.
    pub fn assigned_once(&self) -> bool {
        self.assigned_once
    }

    /// An assignment arrived (its partitions are added by [`Shell::assign`]).
    pub fn note_assignment(&mut self) {
        self.assigned_once = true;
        self.publish_readiness();
    }

    fn publish_readiness(&self) {
        self.readiness.publish(
            self.assigned_once,
            self.slots.len(),
            self.restoring_partitions(),
        );
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Moves the shell to its next phase. A transition the phase table
    /// does not allow is a bug; the shell fails rather than go on.
    pub fn transition(&mut self, transition: Transition) {
        self.phase = match self.phase.after(transition) {
            Some(next) => next,
            None => {
                tracing::error!(phase = ?self.phase, ?transition, "transition not allowed from this phase; failing");
                Phase::Failed
            }
        };
    }

    /// A newly assigned partition: its slot, restoring.
    pub fn assign(&mut self, tp: TopicPartition) {
        self.assignments += 1;
        self.slots.insert(tp, Slot::restoring(self.assignments));
        self.publish_readiness();
    }

    /// The partitions restoring now, with the number of their assignment.
    pub fn restoring(&self) -> Vec<(TopicPartition, u64)> {
        self.slots
            .iter()
            .filter(|(_, s)| s.phase.is_restoring())
            .map(|(tp, s)| (tp.clone(), s.assignment))
            .collect()
    }

    /// True while `tp` is restoring for assignment number `assignment`.
    pub fn awaits_restore(&self, tp: &TopicPartition, assignment: u64) -> bool {
        self.slots
            .get(tp)
            .is_some_and(|s| s.assignment == assignment && s.phase.is_restoring())
    }

    /// Installs the state restored for `tp`'s assignment number
    /// `assignment`, claims its models and sets the slot running. Returns
    /// `None` when the slot is gone or belongs to a later assignment (the
    /// restore is stale and dropped), else the offset to fetch again from,
    /// if records were set aside meanwhile (`Some(None)` when none were).
    /// Models found on another partition too are returned in `split`.
    pub fn install_restored(
        &mut self,
        tp: &TopicPartition,
        assignment: u64,
        models: BTreeMap<String, ModelState>,
        split: &mut Vec<(ModelKey, TopicPartition)>,
    ) -> Option<Option<i64>> {
        if !self.awaits_restore(tp, assignment) {
            return None;
        }
        let slot = self.slots.get_mut(tp)?;
        slot.restored_until = models.values().map(|m| m.input_offset).max().unwrap_or(0);
        slot.state = PartitionState::from_restored(models);
        let refetch_from = slot.phase.restored();
        let lineages: Vec<ModelKey> = slot.state.models.keys().cloned().collect();
        for lineage in lineages {
            if let Ownership::Split { other } = self.owners.claim(&lineage, tp) {
                split.push((lineage, other));
            }
        }
        self.publish_readiness();
        Some(refetch_from)
    }

    /// After an aborted transaction: every partition's state is dropped and
    /// its slot assigned anew (restoring, with a new number, so a restore
    /// begun before the rewind is not installed after it).
    pub fn reassign_all(&mut self) {
        let tps: Vec<TopicPartition> = self.slots.keys().cloned().collect();
        for tp in tps {
            self.release(&tp);
            self.assign(tp);
        }
    }

    /// Swaps in `engine` (a reloaded configuration) and moves every model
    /// under its new policy, keeping the state of unchanged rules (see
    /// `ModelState::rebind`); moved models are snapshotted at the next
    /// commit. Returns how many models moved.
    pub fn reload(&mut self, engine: Engine) -> usize {
        self.engine = engine;
        let mut moved = 0;
        for slot in self.slots.values_mut() {
            for (key, model) in slot.state.models.iter_mut() {
                let Some(policy) = self.engine.policy_for(key.as_str()) else {
                    continue;
                };
                if model.rebind(policy) {
                    slot.dirty.insert(key.clone());
                    moved += 1;
                }
            }
            // Silence rules and windows may have changed: timers anew.
            slot.state.rearm_all();
        }
        moved
    }

    /// Drops a partition's slot and its ownership records.
    pub fn release(&mut self, tp: &TopicPartition) -> Option<Slot> {
        let slot = self.slots.remove(tp)?;
        self.owners.release(tp, &slot.state);
        self.publish_readiness();
        Some(slot)
    }

    /// Models judged silent now, by policy pattern, across partitions.
    pub fn silent_by_policy(&self) -> BTreeMap<String, u64> {
        let mut total = BTreeMap::new();
        for slot in self.slots.values() {
            for (policy, n) in slot.state.silent_by_policy() {
                *total.entry(policy.to_owned()).or_default() += n;
            }
        }
        total
    }

    /// Every output not yet acknowledged, taken from the slots.
    pub fn take_pending(&mut self) -> Vec<PendingOutput> {
        self.slots
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.pending))
            .collect()
    }

    /// Sets the gauges of partitions assigned and restoring, models
    /// tracked and models silent.
    pub fn publish_gauges(&self, metrics: &Metrics) {
        metrics.partitions_assigned.set(self.slots.len() as i64);
        metrics
            .partitions_restoring
            .set(self.restoring_partitions() as i64);
        metrics.models_tracked.set(self.models_tracked() as i64);
        metrics.models_silent.reset();
        for (policy, n) in self.silent_by_policy() {
            metrics
                .models_silent
                .with_label_values(&[policy.as_str()])
                .set(n as i64);
        }
    }

    pub fn models_tracked(&self) -> usize {
        self.slots.values().map(|s| s.state.models.len()).sum()
    }

    pub fn restoring_partitions(&self) -> usize {
        self.slots
            .values()
            .filter(|s| s.phase.is_restoring())
            .count()
    }

    /// True when every processed record's outputs are acknowledged and its
    /// offset stored.
    pub fn settled(&self) -> bool {
        !self.phase.in_transaction() && self.slots.values().all(Slot::settled)
    }

    /// Ready: the first assignment arrived and no partition is restoring.
    pub fn ready(&self) -> bool {
        self.assigned_once && self.restoring_partitions() == 0
    }

    /// The view of one model, wherever it is held.
    pub fn model_view(&self, lineage: &str) -> Option<ModelView> {
        let tp = self.owners.get(lineage)?;
        let model = self.slots.get(tp)?.state.model(lineage)?;
        Some(model.view(self.engine.policy_for(lineage)))
    }
}

/// Locks the shared shell. A poisoned lock means a panic while it was held:
/// the state is marked failed so that nothing more is committed.
pub fn lock(shell: &std::sync::Mutex<Shell>) -> std::sync::MutexGuard<'_, Shell> {
    shell.lock().unwrap_or_else(|poisoned| {
        let mut shell = poisoned.into_inner();
        shell.transition(Transition::Fail);
        shell
    })
}
