//! Everything driftwatch writes (retrain requests, dead letters, state
//! snapshots) and how it becomes durable together with the consumed offsets.
//!
//! Exactly-once: one transactional producer per instance; requests, dead
//! letters, changelog snapshots and the consumed offsets commit in one
//! transaction (KIP-447, with the consumer's group metadata).
//! At-least-once: outputs are awaited, then the snapshots, then offsets are
//! stored; a model's snapshot records the input offset it reflects, so a
//! restarted instance does not apply a record twice to state.

use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::client_errors::{ClientErrors, ReportingContext};
use super::phase::{Phase, Transition};
use super::shell::{lock, PendingOutput, Shell, TopicPartition};
use super::step::{DeadLetterRecord, Output};
use super::{client, PipelineError};
use crate::codec::{schemas, Encoder, SnapshotCodec};
use crate::config::{Config, Processing};
use crate::engine::snapshot::ModelSnapshot;
use crate::model::RetrainRequest;
use crate::telemetry::Metrics;

/// How long transactional calls may take before they count as failed.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// A fence within this long of replacing the producer is taken for another
/// live producer with the same transactional id, not a timed-out
/// transaction the coordinator aborted (KIP-588): the instance stops.
const FENCE_AFTER_RENEWAL: Duration = Duration::from_secs(60);

/// Header names on dead-lettered records.
pub mod dlq_headers {
    pub const ERROR: &str = "driftwatch.error";
    pub const ERROR_KIND: &str = "driftwatch.error.kind";
    pub const SOURCE_TOPIC: &str = "driftwatch.source.topic";
    pub const SOURCE_PARTITION: &str = "driftwatch.source.partition";
    pub const SOURCE_OFFSET: &str = "driftwatch.source.offset";
    /// On a dead letter cut to fit the topic: the original value's size.
    pub const ORIGINAL_VALUE_BYTES: &str = "driftwatch.original.value.bytes";
    /// On a dead letter cut to fit the topic: the original key's size.
    pub const ORIGINAL_KEY_BYTES: &str = "driftwatch.original.key.bytes";
    /// On a dead letter cut to fit the topic: the reason it was refused.
    pub const ORIGINAL_KIND: &str = "driftwatch.original.kind";
}

/// Header of a changelog tombstone: the next input offset when the model
/// was removed, so that a restore can tell a tombstone of an aborted
/// transaction (see `kafka::restore`).
pub const TOMBSTONE_INPUT_OFFSET: &str = "driftwatch.input.offset";

/// librdkafka's default `message.max.bytes`: the largest record the
/// producer sends unless the configuration says otherwise.
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// Room kept below that limit for the record's framing and headers.
const RECORD_OVERHEAD_BYTES: usize = 4_096;
/// A dead letter too large for its topic keeps at most this much of its
/// value (and of its key): enough to see what it was.
pub const DEAD_LETTER_PREFIX_BYTES: usize = 16 * 1024;

/// What became of a dirty model at a commit.
pub enum SnapshotOutcome {
    Sent,
    /// Its snapshot exceeds the changelog's record limit: the model's
    /// state was dropped (and its entry deleted) rather than stop the
    /// pipeline.
    TooLarge {
        lineage: String,
        bytes: usize,
    },
}

/// What a failed commit means for the caller.
#[derive(Debug)]
pub enum CommitFailure {
    /// The transaction was aborted: restore state and rewind to the
    /// committed offsets, then carry on.
    Aborted(String),
    /// Nothing more can be made durable: stop (exit non-zero).
    Fatal(PipelineError),
}

/// The offsets a commit moves: the list handed to Kafka and, per
/// partition, the offset each slot records as committed once it succeeds.
struct Due {
    offsets: TopicPartitionList,
    moved: Vec<(TopicPartition, i64)>,
}

/// What a transaction's commit awaits, taken under the lock.
struct Prepared {
    pending: Vec<PendingOutput>,
    due: Due,
}

/// The producer and encoders of everything driftwatch writes.
pub struct Outputs {
    /// Replaced (exactly-once) when librdkafka declares the transactional
    /// producer unusable; see [`Outputs::renew_producer`].
    producer: RwLock<FutureProducer<ReportingContext>>,
    /// What the producer was made from, to make it again.
    producer_config: ClientConfig,
    client_errors: Arc<ClientErrors>,
    /// When the producer was last replaced: a fence soon after means
    /// another live producer holds the transactional id.
    last_renewal: Mutex<Option<Instant>>,
    processing: Processing,
    output_topic: String,
    dlq_topic: String,
    changelog_topic: String,
    requests: Encoder<RetrainRequest>,
    snapshots: SnapshotCodec,
    /// Largest payload plus key one record may carry.
    record_budget: usize,
    metrics: Arc<Metrics>,
}

impl Outputs {
    /// Creates the producer; in exactly-once mode also initialises
    /// transactions, which fences a previous incarnation of this instance.
    pub fn new(
        config: &Config,
        client_errors: Arc<ClientErrors>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PipelineError> {
        let k = &config.kafka;
        let mut cfg = client::producer(k);
        if k.processing == Processing::ExactlyOnce {
            cfg.set(
                "transactional.id",
                format!("{}-{}", k.group_id, k.instance_id),
            );
            // A crashed instance's open transaction blocks read_committed
            // readers until this passes (a restart with the same instance id
            // aborts it at once); deliveries must time out before it.
            let txn_timeout = k
                .properties
                .get("transaction.timeout.ms")
                .cloned()
                .unwrap_or_else(|| "15000".to_owned());
            cfg.set("transaction.timeout.ms", &txn_timeout);
            if !k.properties.contains_key("message.timeout.ms") {
                cfg.set("message.timeout.ms", &txn_timeout);
            }
        }
        let producer = create_producer(&cfg, &client_errors, k.processing)?;
        Ok(Outputs {
            producer: RwLock::new(producer),
            producer_config: cfg,
            client_errors,
            last_renewal: Mutex::new(None),
            processing: k.processing,
            output_topic: k.output_topic.clone(),
            dlq_topic: k.dlq_topic.clone(),
            changelog_topic: k.changelog_topic.clone(),
            requests: Encoder::new(&config.output_format, schemas::RETRAIN_REQUEST)?,
            snapshots: SnapshotCodec::new()?,
            record_budget: record_budget(k.properties.get("message.max.bytes")),
            metrics,
        })
    }

    pub fn processing(&self) -> Processing {
        self.processing
    }

    /// The current producer (a poisoned lock still holds a usable one:
    /// only [`Outputs::renew_producer`] writes it, by a plain swap).
    fn producer(&self) -> RwLockReadGuard<'_, FutureProducer<ReportingContext>> {
        self.producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces a transactional producer librdkafka declared unusable (a
    /// fatal error such as `INVALID_TXN_STATE` from an abort after the
    /// broker was away longer than `message.timeout.ms`, librdkafka issue
    /// 4849) by a new one with the same `transactional.id`. Its
    /// `init_transactions` bumps the epoch, which aborts whatever the old
    /// producer left open and fences it, so the caller may rewind to the
    /// committed offsets and go on, as Kafka Streams does when it resets a
    /// thread's producer. Fails if the broker does not answer in time.
    fn renewed_within(&self, window: Duration) -> bool {
        self.last_renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < window)
    }

    fn renew_producer(&self, why: &KafkaError) -> Result<(), KafkaError> {
        tracing::warn!(error = %why, "the transactional producer is unusable; replacing it");
        let fresh = create_producer(&self.producer_config, &self.client_errors, self.processing)?;
        let old = {
            let mut slot = self
                .producer
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            std::mem::replace(&mut *slot, fresh)
        };
        drop(old);
        *self
            .last_renewal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        self.metrics.producer_renewals.inc();
        tracing::info!(
            "a new transactional producer took over; rewinding to the committed offsets"
        );
        Ok(())
    }

    /// Opens the transaction outputs go into, unless one is open
    /// (exactly-once only).
    fn begin(&self, shell: &mut Shell) -> Result<(), KafkaError> {
        if self.processing == Processing::ExactlyOnce && shell.phase() == Phase::Idle {
            self.producer().begin_transaction()?;
            shell.transition(Transition::Begin);
        }
        Ok(())
    }

    /// Hands every output the step queued to the producer (in the open
    /// transaction, exactly-once); each slot keeps its deliveries until
    /// they are acknowledged.
    pub fn send_outbox(&self, shell: &mut Shell) -> Result<(), PipelineError> {
        if shell.slots.values().all(|s| s.outbox.is_empty()) {
            return Ok(());
        }
        self.begin(shell)?;
        for (tp, slot) in shell.slots.iter_mut() {
            for output in std::mem::take(&mut slot.outbox) {
                let pending = match output {
                    Output::Request(request) => self.send_request(&request)?,
                    Output::DeadLetter(record) => self.send_dead_letter(&record)?,
                    Output::Tombstone {
                        lineage,
                        input_offset,
                    } => self.send_tombstone(tp, &lineage, input_offset)?,
                };
                slot.pending.push(pending);
            }
        }
        Ok(())
    }

    fn send_request(&self, request: &RetrainRequest) -> Result<PendingOutput, PipelineError> {
        let payload = self.requests.encode(request)?;
        let key = request.model.lineage();
        let headers = OwnedHeaders::new().insert(Header {
            key: "driftwatch.request_id",
            value: Some(request.request_id.as_bytes()),
        });
        let record = FutureRecord::to(&self.output_topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        self.send(&self.output_topic, record)
    }

    /// Sends a record to the dead-letter topic with its reason and source
    /// coordinates, counted by kind. A record too large for the topic is
    /// still dead-lettered: its key and value cut to a prefix, with headers
    /// giving the original sizes and reason, and the kind `too_large`; the
    /// coordinates say where to fetch the original.
    fn send_dead_letter(&self, msg: &DeadLetterRecord) -> Result<PendingOutput, PipelineError> {
        let dead = &msg.dead;
        let partition = msg.partition.to_string();
        let offset = msg.offset.to_string();
        let key = msg.key.as_deref().unwrap_or_default();
        let payload = msg.payload.as_deref().unwrap_or_default();
        let too_large = key.len() + payload.len() + dead.reason.len() > self.record_budget;
        let (kind, reason, key_bytes, value_bytes) = if too_large {
            let reason = format!(
                "record of {} bytes (key {} bytes) exceeds the dead-letter topic's limit; cut to its first {} bytes. Original reason ({}): {}",
                payload.len(),
                key.len(),
                DEAD_LETTER_PREFIX_BYTES,
                dead.kind,
                prefix(dead.reason.as_bytes(), DEAD_LETTER_PREFIX_BYTES).escape_ascii()
            );
            (
                "too_large",
                reason,
                key.len().to_string(),
                payload.len().to_string(),
            )
        } else {
            (dead.kind, dead.reason.clone(), String::new(), String::new())
        };
        let mut headers = OwnedHeaders::new()
            .insert(header(dlq_headers::ERROR, reason.as_bytes()))
            .insert(header(dlq_headers::ERROR_KIND, kind.as_bytes()))
            .insert(header(dlq_headers::SOURCE_TOPIC, msg.topic.as_bytes()))
            .insert(header(dlq_headers::SOURCE_PARTITION, partition.as_bytes()))
            .insert(header(dlq_headers::SOURCE_OFFSET, offset.as_bytes()));
        if too_large {
            headers = headers
                .insert(header(
                    dlq_headers::ORIGINAL_VALUE_BYTES,
                    value_bytes.as_bytes(),
                ))
                .insert(header(
                    dlq_headers::ORIGINAL_KEY_BYTES,
                    key_bytes.as_bytes(),
                ))
                .insert(header(dlq_headers::ORIGINAL_KIND, dead.kind.as_bytes()));
        }
        let cut = |bytes: &'_ [u8]| -> usize {
            if too_large {
                bytes.len().min(DEAD_LETTER_PREFIX_BYTES)
            } else {
                bytes.len()
            }
        };
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.dlq_topic).headers(headers);
        if let Some(key) = &msg.key {
            record = record.key(&key[..cut(key)]);
        }
        if let Some(payload) = &msg.payload {
            record = record.payload(&payload[..cut(payload)]);
        }
        let output = self.send(&self.dlq_topic, record)?;
        self.metrics
            .records_dead_lettered
            .with_label_values(&[msg.topic.as_str(), kind])
            .inc();
        tracing::warn!(topic = %msg.topic, partition = msg.partition, offset = msg.offset,
            kind, reason = %dead.reason, "dead-lettering record");
        Ok(output)
    }

    /// Deletes a model's changelog entry (a record without a value), so a
    /// restore does not bring it back and compaction forgets it.
    /// `input_offset` is the next input offset when it was removed.
    fn send_tombstone(
        &self,
        (topic, partition): &TopicPartition,
        lineage: &str,
        input_offset: i64,
    ) -> Result<PendingOutput, PipelineError> {
        let key = Self::changelog_key(topic, lineage);
        let offset = input_offset.to_string();
        let headers = OwnedHeaders::new().insert(header(TOMBSTONE_INPUT_OFFSET, offset.as_bytes()));
        let record: FutureRecord<'_, String, [u8]> = FutureRecord::to(&self.changelog_topic)
            .partition(*partition)
            .key(&key)
            .headers(headers);
        self.send(&self.changelog_topic, record)
    }

    /// The changelog key of a model held for input `topic`.
    pub fn changelog_key(topic: &str, lineage: &str) -> String {
        format!("{topic}/{lineage}")
    }

    /// Produces the snapshots of every dirty model, to the changelog
    /// partition numbered like the input partition. A snapshot too large
    /// for the changelog drops its model instead (a tombstone is sent).
    fn send_snapshots(
        &self,
        shell: &mut Shell,
    ) -> Result<(Vec<PendingOutput>, Vec<SnapshotOutcome>), PipelineError> {
        let mut sent = Vec::new();
        let mut dropped = Vec::new();
        let Shell {
            engine,
            slots,
            owners,
            ..
        } = shell;
        for (tp, slot) in slots.iter_mut() {
            let offset = slot.processed_next.unwrap_or(0);
            for key in std::mem::take(&mut slot.dirty) {
                let lineage = key.as_str();
                let Some(model) = slot.state.models.get_mut(lineage) else {
                    continue;
                };
                let policy = engine.policy_of(model);
                model.input_offset = offset;
                let payload = self
                    .snapshots
                    .encode(&ModelSnapshot::capture(model, policy, offset))?;
                let key = Self::changelog_key(&tp.0, lineage);
                if payload.len() + key.len() > self.record_budget {
                    slot.state.remove_model(lineage);
                    owners.forget(lineage, tp);
                    sent.push(self.send_tombstone(tp, lineage, offset)?);
                    dropped.push(SnapshotOutcome::TooLarge {
                        lineage: lineage.to_owned(),
                        bytes: payload.len(),
                    });
                    continue;
                }
                let record = FutureRecord::to(&self.changelog_topic)
                    .partition(tp.1)
                    .key(&key)
                    .payload(&payload);
                sent.push(self.send(&self.changelog_topic, record)?);
            }
        }
        Ok((sent, dropped))
    }

    fn send<K, P>(
        &self,
        topic: &str,
        mut record: FutureRecord<'_, K, P>,
    ) -> Result<PendingOutput, PipelineError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        loop {
            let sent = self.producer().send_result(record);
            match sent {
                Ok(delivery) => {
                    return Ok(PendingOutput {
                        topic: topic.to_owned(),
                        delivery,
                    })
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer().poll(Duration::from_millis(10));
                }
                Err((e, _)) => {
                    return Err(PipelineError::Delivery {
                        topic: topic.to_owned(),
                        error: e.to_string(),
                    })
                }
            }
        }
    }

    /// Makes everything processed so far durable and moves the offsets:
    /// commits the transaction (exactly-once), or awaits outputs and
    /// snapshots and stores the offsets (at-least-once; `sync` commits them
    /// at once, as on revocation and shutdown).
    ///
    /// The shell's lock is taken to encode the snapshots and take what is
    /// due, and again to record the outcome, but never held while the
    /// broker is awaited: HTTP readers do not stall behind a slow commit.
    /// Only the pipeline thread applies records, and it is the one here, so
    /// nothing is processed between the two.
    pub fn commit<C: ConsumerContext>(
        &self,
        shell: &Mutex<Shell>,
        consumer: &BaseConsumer<C>,
        sync: bool,
    ) -> Result<(), CommitFailure> {
        match lock(shell).phase() {
            Phase::Failed => {
                return Err(CommitFailure::Fatal(PipelineError::Delivery {
                    topic: "outputs".into(),
                    error: "an earlier output failed; nothing more is committed".into(),
                }))
            }
            // The aborted work is read again after the rewind: nothing of
            // it is committed.
            Phase::Rewinding => return Ok(()),
            Phase::Idle | Phase::InTransaction => {}
        }
        let result = match self.processing {
            Processing::ExactlyOnce => self.commit_transaction(shell, consumer),
            Processing::AtLeastOnce => self.commit_at_least_once(shell, consumer, sync),
        };
        if let Err(CommitFailure::Fatal(_)) = &result {
            lock(shell).transition(Transition::Fail);
        }
        result
    }

    fn offsets(shell: &Shell) -> Result<Due, KafkaError> {
        let mut offsets = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (tp, slot) in &shell.slots {
            if let Some(next) = slot.commit_candidate() {
                offsets.add_partition_offset(&tp.0, tp.1, Offset::Offset(next))?;
                moved.push((tp.clone(), next));
            }
        }
        Ok(Due { offsets, moved })
    }

    fn mark_committed(shell: &mut Shell, moved: Vec<(TopicPartition, i64)>) {
        for (tp, next) in moved {
            if let Some(slot) = shell.slots.get_mut(&tp) {
                slot.committed_next = Some(next);
            }
        }
    }

    /// Under the lock: opens the transaction if needed, sends the
    /// snapshots, and takes every delivery outstanding and the offsets due.
    /// `None` when nothing awaits a commit.
    fn prepare_transaction(&self, shell: &mut Shell) -> Result<Option<Prepared>, CommitFailure> {
        if shell.settled() {
            return Ok(None);
        }
        // Records without outputs opened no transaction; their offsets
        // (and their models' snapshots) need one.
        if let Err(e) = self.begin(shell) {
            return self.handle_transaction_error(shell, e).map(|()| None);
        }
        let snapshots = match self.send_snapshots(shell) {
            Ok((sent, dropped)) => {
                self.report_dropped(dropped);
                sent
            }
            Err(PipelineError::Kafka(e)) => {
                return self.handle_transaction_error(shell, e).map(|()| None)
            }
            Err(other) => return Err(CommitFailure::Fatal(other)),
        };
        let mut pending = shell.take_pending();
        pending.extend(snapshots);
        match Self::offsets(shell) {
            Ok(due) => Ok(Some(Prepared { pending, due })),
            Err(e) => self.handle_transaction_error(shell, e).map(|()| None),
        }
    }

    fn commit_transaction<C: ConsumerContext>(
        &self,
        shell: &Mutex<Shell>,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), CommitFailure> {
        let Some(Prepared { pending, due }) = self.prepare_transaction(&mut lock(shell))? else {
            return Ok(());
        };
        // Await every delivery before committing: the commit would flush
        // anyway, but rust-rdkafka's flush polls in fixed 100 ms slices
        // while the producer's own thread serves the delivery reports, so a
        // commit with reports outstanding costs at least 100 ms.
        if let Err(error) = settle(pending) {
            return self.abort_and_rewind(&mut lock(shell), error);
        }
        let attempt = (|| -> Result<(), KafkaError> {
            if due.offsets.count() > 0 {
                let metadata = consumer
                    .group_metadata()
                    .ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
                self.producer().send_offsets_to_transaction(
                    &due.offsets,
                    &metadata,
                    TXN_TIMEOUT,
                )?;
            }
            self.producer().commit_transaction(TXN_TIMEOUT)
        })();
        let mut shell = lock(shell);
        match attempt {
            Ok(()) => {
                shell.transition(Transition::Commit);
                Self::mark_committed(&mut shell, due.moved);
                Ok(())
            }
            Err(e) => self.handle_transaction_error(&mut shell, e),
        }
    }

    /// Aborts where possible; a fatal error replaces the producer (see
    /// [`Outputs::renew_and_rewind`]).
    fn handle_transaction_error(
        &self,
        shell: &mut Shell,
        error: KafkaError,
    ) -> Result<(), CommitFailure> {
        if is_fatal(&error) {
            return self.renew_and_rewind(shell, error);
        }
        self.abort_and_rewind(shell, error.to_string())
    }

    /// Aborts the open transaction and asks the loop to rewind to the
    /// committed offsets; an abort librdkafka cannot make replaces the
    /// producer, and only a failed replacement is fatal.
    fn abort_and_rewind(&self, shell: &mut Shell, reason: String) -> Result<(), CommitFailure> {
        tracing::warn!(error = %reason, "transaction failed; aborting and rewinding to the committed offsets");
        discard_outputs(shell);
        // The producer's read guard must be gone before a renewal writes it.
        let aborted = self.producer().abort_transaction(TXN_TIMEOUT);
        if let Err(abort) = aborted {
            return self.renew_and_rewind(shell, abort);
        }
        shell.transition(Transition::Abort);
        Err(CommitFailure::Aborted(reason))
    }

    /// Replaces the producer after `error` and rewinds. A fence is renewed
    /// too (the coordinator fences a producer whose transaction it timed
    /// out, and the consumer group's generation in every offset commit
    /// keeps a zombie from committing, KIP-447), unless it comes soon after
    /// a renewal. That, or a replacement the broker does not grant, stops
    /// the instance (exit non-zero; a restart recovers from the committed
    /// offsets and the changelog).
    fn renew_and_rewind(&self, shell: &mut Shell, error: KafkaError) -> Result<(), CommitFailure> {
        discard_outputs(shell);
        if is_fenced(&error) && self.renewed_within(FENCE_AFTER_RENEWAL) {
            tracing::error!(error = %error, "fenced again soon after replacing the producer: another instance holds this transactional id (a shared instance_id?); stopping");
            return Err(CommitFailure::Fatal(error.into()));
        }
        if let Err(renewal) = self.renew_producer(&error) {
            tracing::error!(error = %error, renewal = %renewal, "replacing the transactional producer failed; stopping");
            return Err(CommitFailure::Fatal(renewal.into()));
        }
        shell.transition(Transition::Abort);
        Err(CommitFailure::Aborted(error.to_string()))
    }

    /// Aborts the open transaction (a lost assignment): its effects are
    /// discarded and every slot is rewound.
    pub fn abort(&self, shell: &mut Shell) {
        if self.processing == Processing::ExactlyOnce && shell.phase().in_transaction() {
            let aborted = self.producer().abort_transaction(TXN_TIMEOUT);
            match aborted {
                Ok(()) => {
                    shell.transition(Transition::Abort);
                    discard_outputs(shell);
                }
                Err(e) => match self.renew_and_rewind(shell, e) {
                    Err(CommitFailure::Fatal(e)) => {
                        tracing::error!(error = %e, "aborting after a lost assignment failed");
                        shell.transition(Transition::Fail);
                    }
                    Ok(()) | Err(CommitFailure::Aborted(_)) => {}
                },
            }
        }
    }

    fn commit_at_least_once<C: ConsumerContext>(
        &self,
        shell: &Mutex<Shell>,
        consumer: &BaseConsumer<C>,
        sync: bool,
    ) -> Result<(), CommitFailure> {
        let fatal = |e: PipelineError| CommitFailure::Fatal(e);
        // Outputs first: a snapshot may only claim records whose outputs
        // are acknowledged.
        let pending = lock(shell).take_pending();
        settle(pending).map_err(|error| {
            fatal(PipelineError::Delivery {
                topic: "outputs".into(),
                error,
            })
        })?;
        let (snapshots, due) = {
            let mut shell = lock(shell);
            let (snapshots, dropped) = self.send_snapshots(&mut shell).map_err(fatal)?;
            self.report_dropped(dropped);
            let due = Self::offsets(&shell).map_err(|e| fatal(e.into()))?;
            (snapshots, due)
        };
        settle(snapshots).map_err(|error| {
            fatal(PipelineError::Delivery {
                topic: self.changelog_topic.clone(),
                error,
            })
        })?;
        if due.offsets.count() > 0 {
            let result = if sync {
                consumer.commit(&due.offsets, CommitMode::Sync)
            } else {
                consumer.store_offsets(&due.offsets)
            };
            result.map_err(|e| fatal(e.into()))?;
        }
        let mut shell = lock(shell);
        Self::mark_committed(&mut shell, due.moved);
        shell.transition(Transition::Commit);
        Ok(())
    }

    /// Logs and counts the models dropped because their snapshot outgrew
    /// the changelog.
    fn report_dropped(&self, dropped: Vec<SnapshotOutcome>) {
        for outcome in dropped {
            if let SnapshotOutcome::TooLarge { lineage, bytes } = outcome {
                self.metrics
                    .models_removed
                    .with_label_values(&["too_large"])
                    .inc();
                tracing::error!(model = %lineage, bytes, "model state dropped: its snapshot exceeds the changelog's record limit (message.max.bytes); the model starts afresh with its next event");
            }
        }
    }

    /// Flushes the producer on exit.
    pub fn flush(&self) {
        if let Err(e) = self.producer().flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "flushing producer on exit");
        }
    }
}

/// Makes the producer from `cfg`; exactly-once also initialises its
/// transactions, which fences an earlier producer with the same id.
fn create_producer(
    cfg: &ClientConfig,
    client_errors: &Arc<ClientErrors>,
    processing: Processing,
) -> Result<FutureProducer<ReportingContext>, KafkaError> {
    let producer: FutureProducer<ReportingContext> =
        cfg.create_with_context(ReportingContext(Arc::clone(client_errors)))?;
    if processing == Processing::ExactlyOnce {
        producer.init_transactions(TXN_TIMEOUT)?;
    }
    Ok(producer)
}

/// librdkafka gave up on the transactional producer.
fn is_fatal(error: &KafkaError) -> bool {
    matches!(error, KafkaError::Transaction(e) if e.is_fatal())
}

/// Another producer with this transactional id took over.
fn is_fenced(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
    )
}

/// Drops the outputs of an aborted transaction, sent or not: the records
/// behind them are read again.
fn discard_outputs(shell: &mut Shell) {
    for slot in shell.slots.values_mut() {
        slot.outbox.clear();
        slot.pending.clear();
    }
}

/// The payload and key one record may carry under `message.max.bytes`.
fn record_budget(configured: Option<&String>) -> usize {
    let limit = configured
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
    limit.saturating_sub(RECORD_OVERHEAD_BYTES).max(1024)
}

/// At most the first `max` bytes of `bytes`.
fn prefix(bytes: &[u8], max: usize) -> &[u8] {
    &bytes[..bytes.len().min(max)]
}

fn header<'a>(key: &'a str, value: &'a [u8]) -> Header<'a, &'a [u8]> {
    Header {
        key,
        value: Some(value),
    }
}

/// Waits for every pending output; the first failure is returned.
pub fn settle(pending: Vec<PendingOutput>) -> Result<(), String> {
    let mut first_error = None;
    for output in pending {
        let error = match futures::executor::block_on(output.delivery) {
            Ok(Ok(_)) => continue,
            Ok(Err((e, _))) => e.to_string(),
            Err(_) => "producer dropped the delivery".to_owned(),
        };
        first_error.get_or_insert(format!("{}: {}", output.topic, error));
    }
    first_error.map_or(Ok(()), Err)
}
