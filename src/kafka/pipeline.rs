//! The consumer loop: restore, poll, decode, apply, produce, commit.
//!
//! Runs on a dedicated thread with a `BaseConsumer`, so that rebalance
//! callbacks run synchronously inside `poll` and never race the loop. Every
//! `commit_interval` the work since the last commit becomes durable at once
//! (see [`super::outputs`]): exactly-once in one transaction, or
//! at-least-once with offsets stored only after outputs and snapshots are
//! acknowledged. Request ids are deterministic either way.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::client_errors::ClientErrors;
use super::context::PipelineContext;
use super::heartbeat::Heartbeat;
use super::outputs::{CommitFailure, DeadLetter, Outputs};
use super::restore::Restorer;
use super::shell::{lock, Ownership, Shell, Slot, TopicPartition};
use super::{admin, client, PipelineError};
use crate::codec::{schemas, Decoder};
use crate::config::{Config, InputTopics, LatePolicy, Processing};
use crate::engine::state::{ModelKey, PartitionState};
use crate::engine::{EventOutcome, Removed, SkipReason, StatusOutcome};
use crate::model::{EventView, MetricEvent, MetricEventRef, RetrainStatus};
use crate::telemetry::Metrics;
use prometheus::IntCounter;

pub use super::outputs::dlq_headers;

const POLL_TIMEOUT: Duration = Duration::from_millis(50);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(30);

/// What the rest of the process shares with the pipeline.
#[derive(Clone)]
pub struct Shared {
    pub shell: Arc<Mutex<Shell>>,
    pub metrics: Arc<Metrics>,
    /// What the Kafka clients reported going wrong, for `/readyz`.
    pub client_errors: Arc<ClientErrors>,
    /// Turns of the pipeline loop, for `/healthz`.
    pub heartbeat: Arc<Heartbeat>,
    /// Set to ask the pipeline to finish, commit and leave the group.
    pub shutdown: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(shell: Shell, metrics: Arc<Metrics>) -> Self {
        Shared {
            shell: Arc::new(Mutex::new(shell)),
            client_errors: Arc::new(ClientErrors::new(Arc::clone(&metrics))),
            heartbeat: Arc::new(Heartbeat::new()),
            metrics,
            shutdown: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Shell> {
        lock(&self.shell)
    }
}

/// Most records polled into one batch.
const MAX_BATCH: usize = 4_096;

/// Records decoded, then applied, at a time: their decoded events stay in
/// the cache between the two.
const DECODE_CHUNK: usize = 256;

/// What decoding one polled record gave: an event borrowing from the
/// record, or the reason it goes to the dead-letter topic.
type Verdict<'m> = Result<MetricEventRef<'m>, DeadLetter>;

/// The counters of one input topic, resolved once (a label look-up per
/// record costs more than the count).
#[derive(Clone)]
struct TopicCounters {
    consumed: IntCounter,
    applied: IntCounter,
}

/// Decodes and applies records, a polled batch at a time.
struct Worker<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    outputs: &'a Outputs,
    decoders: FxHashMap<String, Decoder<MetricEvent>>,
    counters: FxHashMap<String, TopicCounters>,
    /// The lineage of the record being handled.
    lineage: String,
}

impl Worker<'_> {
    fn counters(&mut self, topic: &str) -> TopicCounters {
        if !self.counters.contains_key(topic) {
            let counters = TopicCounters {
                consumed: self.metrics.records_consumed.with_label_values(&[topic]),
                applied: self.metrics.records_applied.with_label_values(&[topic]),
            };
            self.counters.insert(topic.to_owned(), counters);
        }
        self.counters[topic].clone()
    }

    /// Polls a batch: waits up to `POLL_TIMEOUT` for the first record, then
    /// takes whatever is already fetched, up to [`MAX_BATCH`], decoding
    /// each outside the shell's lock. Rebalance callbacks run inside these
    /// polls, between records.
    fn poll_batch<'c>(
        &mut self,
        consumer: &'c BaseConsumer<PipelineContext>,
    ) -> Vec<BorrowedMessage<'c>> {
        let mut batch = Vec::new();
        let mut timeout = POLL_TIMEOUT;
        while batch.len() < MAX_BATCH {
            match consumer.poll(timeout) {
                Some(Ok(msg)) => batch.push(msg),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
            timeout = Duration::ZERO;
        }
        batch
    }

    /// Decodes a polled batch (outside the shell's lock), each event
    /// borrowing from its record.
    fn decode_batch<'m>(
        &mut self,
        batch: &'m [BorrowedMessage<'_>],
    ) -> Result<Vec<Verdict<'m>>, PipelineError> {
        let mut verdicts = Vec::with_capacity(batch.len());
        for msg in batch {
            verdicts.push(self.decode(msg)?);
        }
        Ok(verdicts)
    }

    /// Applies a decoded batch under one lock of the shell.
    fn apply_batch(
        &mut self,
        shell: &mut Shell,
        batch: &[BorrowedMessage<'_>],
        verdicts: &[Verdict<'_>],
    ) -> Result<(), PipelineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        // Records come in runs of one partition: its key and counters
        // are made once per run.
        let mut tp: TopicPartition = (String::new(), -1);
        let mut counters: Option<TopicCounters> = None;
        // Each verdict is handled where it lies (an event is a few hundred
        // bytes: moving it per record showed in the profile).
        for (msg, verdict) in batch.iter().zip(verdicts) {
            if tp.1 != msg.partition() || tp.0 != msg.topic() {
                tp = (msg.topic().to_owned(), msg.partition());
                counters = None;
            }
            let counters = match &counters {
                Some(c) => c,
                None => counters.insert(self.counters(&tp.0)),
            };
            self.handle(shell, &tp, counters, msg, verdict)?;
        }
        self.metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// Decodes and validates one record. `Ok(Err(_))` is a record to
    /// dead-letter; `Err(_)` stops the pipeline (setup or transient failure).
    fn decode<'m>(&mut self, msg: &'m BorrowedMessage<'_>) -> Result<Verdict<'m>, PipelineError> {
        let topic = msg.topic();
        let Some(payload) = msg.payload() else {
            return Ok(Err(DeadLetter {
                kind: "empty",
                reason: "record has no value".into(),
            }));
        };
        let decoder = match self.decoders.get(topic) {
            Some(decoder) => decoder,
            None => {
                let decoder =
                    Decoder::new(self.config.format_for_topic(topic), schemas::METRIC_EVENT)?;
                self.decoders.entry(topic.to_owned()).or_insert(decoder)
            }
        };
        match decoder.decode_event(payload) {
            Ok(event) => Ok(event.validate().map(|()| event).map_err(|e| DeadLetter {
                kind: "invalid",
                reason: e.to_string(),
            })),
            Err(e) if e.is_transient() => Err(PipelineError::Transient {
                topic: topic.to_owned(),
                partition: msg.partition(),
                offset: msg.offset(),
                error: e.to_string(),
            }),
            Err(e) => Ok(Err(DeadLetter {
                kind: e.kind(),
                reason: e.to_string(),
            })),
        }
    }

    /// Sends a record to the dead-letter topic with its reason, counted.
    fn dead_letter(
        &self,
        slot: &mut Slot,
        msg: &BorrowedMessage<'_>,
        dead: &DeadLetter,
    ) -> Result<(), PipelineError> {
        let sent = self.outputs.send_dead_letter(msg, dead)?;
        self.metrics
            .records_dead_lettered
            .with_label_values(&[msg.topic(), sent.kind])
            .inc();
        tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(),
            kind = sent.kind, reason = %dead.reason, "dead-lettering record");
        slot.pending.push(sent.output);
        Ok(())
    }

    /// The dead letter's reason for an event the engine refused.
    fn skip_reason(
        &self,
        state: &PartitionState,
        event: &MetricEventRef<'_>,
        record_time: Option<i64>,
        reason: SkipReason,
    ) -> String {
        let engine = &self.config.engine;
        match reason {
            SkipReason::TooLate => {
                let lateness = engine.allowed_lateness_ms;
                let watermark = state.watermark(lateness).unwrap_or(i64::MIN);
                format!(
                    "event time {} is behind the partition's watermark {} (stream time minus allowed lateness {} ms)",
                    event.timestamp, watermark, lateness
                )
            }
            SkipReason::FutureTimestamp => match record_time {
                Some(record) => format!(
                    "event time {} is more than engine.max_clock_skew ({} ms) ahead of the record's timestamp {}",
                    event.timestamp, engine.max_clock_skew_ms, record
                ),
                None => format!(
                    "event time {} is more than engine.max_clock_skew ({} ms) ahead of the partition's stream time {}",
                    event.timestamp,
                    engine.max_clock_skew_ms,
                    state.stream_time.unwrap_or(i64::MIN)
                ),
            },
            other => other.as_str().to_owned(),
        }
    }

    /// Counts (and logs, first per partition) a record whose key is not
    /// the lineage of the model in its value: such a producer splits a
    /// model's telemetry across partitions. The event is still applied.
    fn check_key(&self, slot: &mut Slot, msg: &BorrowedMessage<'_>, lineage: &str) {
        let Some(key) = msg.key() else {
            return;
        };
        if key == lineage.as_bytes() {
            return;
        }
        self.metrics
            .key_mismatch
            .with_label_values(&[msg.topic()])
            .inc();
        let key = String::from_utf8_lossy(&key[..key.len().min(256)]);
        if !slot.key_mismatch_logged {
            slot.key_mismatch_logged = true;
            tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), %key, model = lineage,
                "record key is not the model's lineage (project/name): key telemetry by lineage so a model stays on one partition; further mismatches on this partition are only counted");
        } else {
            tracing::debug!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), %key, model = lineage,
                "record key is not the model's lineage");
        }
    }

    /// A model the engine removed: its changelog entry is deleted (a
    /// tombstone), so a restore does not bring it back and compaction
    /// forgets it.
    fn remove_model(
        &self,
        slot: &mut Slot,
        owners: &mut super::shell::Owners,
        tp: &TopicPartition,
        gone: &Removed,
    ) -> Result<(), PipelineError> {
        self.metrics
            .models_removed
            .with_label_values(&[gone.cause.as_str()])
            .inc();
        tracing::info!(model = %gone.lineage, cause = gone.cause.as_str(), last_event_at = ?gone.last_event_at,
            partition = tp.1, "model state removed");
        if slot.state.models.contains_key(gone.lineage.as_str()) {
            // Removed and started afresh by this very event: its snapshot
            // follows the tombstone at the next commit.
        } else {
            slot.dirty.remove(gone.lineage.as_str());
            owners.forget(&gone.lineage, tp);
        }
        let next = slot.processed_next.unwrap_or(0);
        slot.pending
            .push(self.outputs.send_tombstone(tp, &gone.lineage, next)?);
        Ok(())
    }

    fn handle(
        &mut self,
        shell: &mut Shell,
        tp: &TopicPartition,
        counters: &TopicCounters,
        msg: &BorrowedMessage<'_>,
        verdict: &Verdict<'_>,
    ) -> Result<(), PipelineError> {
        let topic = msg.topic();
        let offset = msg.offset();
        let Shell {
            engine,
            slots,
            owners,
            book,
            txn_open,
            ..
        } = shell;
        // The slot is looked up once per record.
        let slot = match slots.get_mut(tp) {
            // Fetched before a revocation: the next owner reads it.
            None => return Ok(()),
            // Fetched before the pause took effect: read again after restore.
            Some(slot) if slot.restoring => {
                slot.refetch_from = Some(slot.refetch_from.map_or(offset, |o| o.min(offset)));
                return Ok(());
            }
            Some(slot) => slot,
        };
        counters.consumed.inc();
        self.outputs.begin(txn_open)?;

        match verdict {
            Err(dead) => self.dead_letter(slot, msg, dead)?,
            Ok(event) => {
                // The lineage is written into the worker's buffer: no
                // allocation per record.
                event.write_lineage(&mut self.lineage);
                let lineage = self.lineage.as_str();
                if offset < slot.restored_until
                    && slot
                        .state
                        .model(lineage)
                        .is_some_and(|m| offset < m.input_offset)
                {
                    // Already reflected in the restored snapshot (at-least-once restart).
                    self.metrics
                        .records_skipped
                        .with_label_values(&[topic, "already_applied"])
                        .inc();
                    slot.processed_next = Some(offset + 1);
                    return Ok(());
                }
                self.check_key(slot, msg, lineage);
                let record_time = msg.timestamp().to_millis();
                match engine.apply_record(&mut slot.state, event, record_time) {
                    EventOutcome::Applied {
                        requests,
                        new_model,
                        released,
                        removed,
                        silenced,
                    } => {
                        counters.applied.inc();
                        slot.mark_dirty(lineage);
                        slot.dirty.extend(released);
                        for gone in removed {
                            self.remove_model(slot, owners, tp, &gone)?;
                        }
                        for s in silenced {
                            tracing::warn!(model = %s.lineage, rule = %s.rule, last_event_at = s.last_event_at,
                                partition = tp.1, "model went silent");
                        }
                        let key = new_model
                            .then(|| slot.state.models.get_key_value(lineage))
                            .flatten();
                        if let Some((key, _)) = key {
                            if let Ownership::Split { other } = owners.claim(key, tp) {
                                self.metrics.model_split.inc();
                                tracing::warn!(model = %lineage, partition = tp.1, other_partition = other.1,
                                    "model seen on two partitions: producers must key telemetry by project/name");
                            }
                        }
                        for request in requests {
                            if let Some(status) = book.get(&request.request_id) {
                                engine.apply_status(&mut slot.state, status);
                            }
                            slot.pending.push(self.outputs.send_request(&request)?);
                            self.metrics
                                .requests_produced
                                .with_label_values(&[request.action.as_str()])
                                .inc();
                            tracing::info!(request_id = %request.request_id, model = %request.model,
                                action = request.action.as_str(), rule = %request.rule, reason = %request.reason,
                                "retrain request");
                        }
                    }
                    EventOutcome::Skipped(reason) => {
                        if slot.state.models.contains_key(lineage) {
                            slot.mark_dirty(lineage); // its late or future counter
                        }
                        let engine_limits = &self.config.engine;
                        let policy = match reason {
                            SkipReason::TooLate => engine_limits.late_events,
                            SkipReason::FutureTimestamp => engine_limits.future_events,
                            _ => LatePolicy::Drop,
                        };
                        if policy == LatePolicy::DeadLetter {
                            let dead = DeadLetter {
                                kind: reason.as_str(),
                                reason: self.skip_reason(&slot.state, event, record_time, reason),
                            };
                            self.dead_letter(slot, msg, &dead)?;
                        } else {
                            self.metrics
                                .records_skipped
                                .with_label_values(&[topic, reason.as_str()])
                                .inc();
                        }
                    }
                }
            }
        }
        // Only now: the record's outputs are queued.
        slot.processed_next = Some(offset + 1);
        Ok(())
    }
}

/// The group's committed offset of each partition (0 where none is).
fn committed_offsets(
    consumer: &BaseConsumer<PipelineContext>,
    partitions: &[TopicPartition],
) -> Result<BTreeMap<TopicPartition, i64>, PipelineError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, COMMITTED_TIMEOUT)?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(n) => n,
                _ => 0,
            };
            ((e.topic().to_owned(), e.partition()), offset)
        })
        .collect())
}

/// Restores every slot marked restoring, then resumes its partition.
fn restore_pending(
    shared: &Shared,
    consumer: &BaseConsumer<PipelineContext>,
    restorer: &Restorer,
    processing: Processing,
) -> Result<(), PipelineError> {
    let todo: Vec<TopicPartition> = shared
        .lock()
        .slots
        .iter()
        .filter(|(_, s)| s.restoring)
        .map(|(tp, _)| tp.clone())
        .collect();
    if todo.is_empty() {
        return Ok(());
    }
    let engine = shared.lock().engine.clone();
    let committed = match processing {
        Processing::ExactlyOnce => Some(committed_offsets(consumer, &todo)?),
        Processing::AtLeastOnce => None,
    };
    let restored = restorer.restore(
        &engine,
        &todo,
        committed.as_ref(),
        &shared.metrics,
        &shared.heartbeat,
    )?;
    for (tp, models) in restored {
        let mut shell = shared.lock();
        let Some(slot) = shell.slots.get_mut(&tp) else {
            continue; // revoked meanwhile
        };
        slot.restored_until = models.values().map(|m| m.input_offset).max().unwrap_or(0);
        slot.state = PartitionState::from_restored(models);
        slot.restoring = false;
        let refetch_from = slot.refetch_from.take();
        let lineages: Vec<ModelKey> = slot.state.models.keys().cloned().collect();
        for lineage in lineages {
            if let Ownership::Split { other } = shell.owners.claim(&lineage, &tp) {
                shared.metrics.model_split.inc();
                tracing::warn!(model = %lineage, partition = tp.1, other_partition = other.1, "model restored on two partitions");
            }
        }
        shell.publish_gauges(&shared.metrics);
        drop(shell);
        if let Some(offset) = refetch_from {
            tracing::debug!(topic = %tp.0, partition = tp.1, offset, "reading records polled during restore again");
            consumer.seek(&tp.0, tp.1, Offset::Offset(offset), SEEK_TIMEOUT)?;
        }
        let mut resume = TopicPartitionList::new();
        resume.add_partition(&tp.0, tp.1);
        consumer.resume(&resume)?;
    }
    Ok(())
}

/// After an aborted transaction: every slot's state is discarded and
/// restored from the changelog, and its partition rewound to the committed
/// offset.
fn rewind(shared: &Shared, consumer: &BaseConsumer<PipelineContext>) -> Result<(), PipelineError> {
    let mut tpl = TopicPartitionList::new();
    {
        let mut shell = shared.lock();
        shell.rewind = false;
        let tps: Vec<TopicPartition> = shell.slots.keys().cloned().collect();
        for tp in tps {
            shell.release(&tp);
            shell.slots.insert(tp.clone(), Slot::restoring());
            tpl.add_partition(&tp.0, tp.1);
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    consumer.pause(&tpl)?;
    let committed = consumer.committed_offsets(tpl, COMMITTED_TIMEOUT)?;
    for elem in committed.elements() {
        let offset = match elem.offset() {
            Offset::Offset(n) => Offset::Offset(n),
            _ => Offset::Beginning,
        };
        consumer.seek(elem.topic(), elem.partition(), offset, SEEK_TIMEOUT)?;
    }
    tracing::info!(
        partitions = committed.count(),
        "rewound to the committed offsets"
    );
    Ok(())
}

struct StatusFeed {
    consumer: BaseConsumer,
    decoder: Decoder<RetrainStatus>,
    topic: String,
    assigned: bool,
    next_attempt: Instant,
}

impl StatusFeed {
    fn new(config: &Config, topic: &str) -> Result<Self, PipelineError> {
        Ok(StatusFeed {
            consumer: client::status_consumer(&config.kafka).create()?,
            decoder: Decoder::new(&config.status_format, schemas::RETRAIN_STATUS)?,
            topic: topic.to_owned(),
            assigned: false,
            next_attempt: Instant::now(),
        })
    }

    /// Assigns all partitions once the topic exists (retried every 5 s).
    fn ensure_assigned(&mut self) {
        if self.assigned || Instant::now() < self.next_attempt {
            return;
        }
        self.next_attempt = Instant::now() + Duration::from_secs(5);
        let metadata = match self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "status topic metadata unavailable");
                return;
            }
        };
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return;
        };
        if topic.error().is_some() || topic.partitions().is_empty() {
            tracing::warn!(topic = %self.topic, "status topic not available yet");
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in topic.partitions() {
            if let Err(e) = tpl.add_partition_offset(&self.topic, p.id(), Offset::Beginning) {
                tracing::error!(error = %e, "building status assignment");
                return;
            }
        }
        match self.consumer.assign(&tpl) {
            Ok(()) => {
                self.assigned = true;
                tracing::info!(topic = %self.topic, partitions = tpl.count(), "reading statuses");
            }
            Err(e) => tracing::warn!(error = %e, "assigning status partitions failed"),
        }
    }

    /// Applies whatever statuses are ready, without waiting.
    fn drain(&mut self, shared: &Shared) {
        self.ensure_assigned();
        if !self.assigned {
            return;
        }
        for _ in 0..1_000 {
            let msg = match self.consumer.poll(Duration::ZERO) {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "status consumer");
                    return;
                }
                Some(Ok(msg)) => msg,
            };
            let status = match msg.payload().map(|p| self.decoder.decode(p)) {
                Some(Ok(status)) => status,
                Some(Err(e)) => {
                    shared
                        .metrics
                        .statuses
                        .with_label_values(&["malformed"])
                        .inc();
                    tracing::warn!(offset = msg.offset(), error = %e, "undecodable status ignored");
                    continue;
                }
                None => continue,
            };
            let outcome = apply_status(&mut shared.lock(), status);
            shared.metrics.statuses.with_label_values(&[outcome]).inc();
        }
    }
}

/// Routes one status to the model it names; returns the outcome label.
pub fn apply_status(shell: &mut Shell, status: RetrainStatus) -> &'static str {
    let lineage = status.model.lineage();
    let owner = shell.owners.get(&lineage).cloned();
    let outcome = match owner.and_then(|tp| shell.slots.get_mut(&tp)) {
        Some(slot) => match shell.engine.apply_status(&mut slot.state, &status) {
            StatusOutcome::Applied => {
                slot.mark_dirty(&lineage);
                "applied"
            }
            StatusOutcome::NotInFlight => "not_in_flight",
            StatusOutcome::UnknownModel => "not_owned",
        },
        None => "not_owned",
    };
    if status.status.is_terminal() {
        shell.book.insert(status);
    }
    outcome
}

/// Runs the pipeline until `shared.shutdown` is set or a fatal error occurs.
/// `started` is called once the clients exist and the group subscription is
/// made, so that start-up errors surface before the service reports running.
pub fn run(config: &Config, shared: &Shared, started: impl FnOnce()) -> Result<(), PipelineError> {
    // A start-up call that times out says why when the clients said it
    // (authentication or TLS failed, say).
    let explain =
        |error: PipelineError| match (error, shared.client_errors.recent(Duration::from_secs(120)))
        {
            (PipelineError::Kafka(error), Some(last)) => PipelineError::Unreachable { error, last },
            (error, _) => error,
        };
    let outputs = Arc::new(
        Outputs::new(
            config,
            Arc::clone(&shared.client_errors),
            Arc::clone(&shared.metrics),
        )
        .map_err(explain)?,
    );
    let context = PipelineContext {
        shell: Arc::clone(&shared.shell),
        metrics: Arc::clone(&shared.metrics),
        outputs: Arc::clone(&outputs),
        client_errors: Arc::clone(&shared.client_errors),
        read_committed: config.kafka.processing == Processing::ExactlyOnce,
    };
    let consumer: BaseConsumer<PipelineContext> =
        client::group_consumer(&config.kafka).create_with_context(context)?;
    admin::check_changelog(config, &consumer).map_err(explain)?;
    match &config.kafka.input {
        InputTopics::List(topics) => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
        }
        InputTopics::Pattern(pattern) => consumer.subscribe(&[pattern.as_str()])?,
    }
    let restorer = Restorer::new(config)?;
    let mut statuses = match &config.kafka.status_topic {
        Some(topic) => Some(StatusFeed::new(config, topic)?),
        None => None,
    };
    let mut worker = Worker {
        config,
        metrics: &shared.metrics,
        outputs: &outputs,
        decoders: FxHashMap::default(),
        counters: FxHashMap::default(),
        lineage: String::new(),
    };
    tracing::info!(group = %config.kafka.group_id, processing = ?config.kafka.processing, "pipeline started");
    started();

    let commit_interval = Duration::from_millis(config.kafka.commit_interval_ms);
    let mut last_commit = Instant::now();
    let result = (|| -> Result<(), PipelineError> {
        loop {
            shared.heartbeat.beat();
            if shared.shutdown.load(Ordering::Relaxed) {
                return Ok(());
            }
            if shared.lock().failed {
                return Err(PipelineError::Delivery {
                    topic: "outputs".into(),
                    error: "outputs could not be made durable".into(),
                });
            }
            if shared.lock().rewind {
                rewind(shared, &consumer)?;
            }
            restore_pending(shared, &consumer, &restorer, config.kafka.processing)?;
            let batch = worker.poll_batch(&consumer);
            let applied = batch.chunks(DECODE_CHUNK).try_for_each(|chunk| {
                let verdicts = worker.decode_batch(chunk)?;
                worker.apply_batch(&mut shared.lock(), chunk, &verdicts)
            });
            if let Err(e) = applied {
                shared.lock().failed = true;
                return Err(e);
            }
            if let Some(feed) = statuses.as_mut() {
                feed.drain(shared);
            }
            if last_commit.elapsed() >= commit_interval {
                commit(shared, &outputs, &consumer, false)?;
                // From the end of the commit: a slow commit must not leave
                // the next interval without time to process records.
                last_commit = Instant::now();
            }
        }
    })();
    if result.is_ok() {
        commit(shared, &outputs, &consumer, true)?;
        tracing::info!("pipeline stopped; leaving the group");
    } else {
        shared.lock().failed = true;
    }
    // Dropping the consumer leaves the group; the revocation callback
    // commits what remains, unless the pipeline failed.
    drop(consumer);
    outputs.flush();
    result
}

/// One commit cycle; an aborted transaction leads to a rewind, anything
/// else that fails stops the pipeline.
fn commit(
    shared: &Shared,
    outputs: &Outputs,
    consumer: &BaseConsumer<PipelineContext>,
    sync: bool,
) -> Result<(), PipelineError> {
    let started = Instant::now();
    let mut shell = shared.lock();
    shell.publish_gauges(&shared.metrics);
    let had_work = shell.txn_open || shell.slots.values().any(|s| !s.settled());
    match outputs.commit(&mut shell, consumer, sync) {
        Ok(()) => {
            if started.elapsed() > Duration::from_secs(1) {
                tracing::warn!(seconds = started.elapsed().as_secs_f64(), "slow commit");
            }
            if had_work {
                let label = match outputs.processing() {
                    Processing::ExactlyOnce => "committed",
                    Processing::AtLeastOnce => "stored",
                };
                shared
                    .metrics
                    .transactions
                    .with_label_values(&[label])
                    .inc();
                shared
                    .metrics
                    .commit_batch_seconds
                    .with_label_values(&[label])
                    .observe(started.elapsed().as_secs_f64());
            }
            Ok(())
        }
        Err(CommitFailure::Aborted(e)) => {
            shared
                .metrics
                .transactions
                .with_label_values(&["aborted"])
                .inc();
            tracing::warn!(error = %e, "transaction aborted; rewinding");
            Ok(())
        }
        Err(CommitFailure::Fatal(e)) => Err(e),
    }
}
