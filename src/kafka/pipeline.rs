//! The consumer loop: poll, decode, apply, produce, settle, store offsets.
//!
//! Runs on a dedicated thread with a `BaseConsumer`, so that rebalance
//! callbacks run synchronously inside `poll` and never race the loop. A
//! record's offset is stored only after every output it caused (retrain
//! request or dead letter) was acknowledged by the broker: at-least-once,
//! with deterministic request ids so that a coordinator can deduplicate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::context::{settle, PipelineContext};
use super::shell::{Ownership, PendingOutput, Shell, TopicPartition};
use super::{client, PipelineError};
use crate::codec::{schemas, Decoder, Encoder};
use crate::config::{Config, InputTopics};
use crate::engine::{EventOutcome, StatusOutcome};
use crate::model::{MetricEvent, RetrainRequest, RetrainStatus};
use crate::telemetry::Metrics;

/// Outputs are settled and offsets stored at least this often.
const SETTLE_INTERVAL: Duration = Duration::from_millis(100);
/// ... or after this many records.
const SETTLE_RECORDS: usize = 2_000;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Header names on dead-lettered records.
pub mod dlq_headers {
    pub const ERROR: &str = "driftwatch.error";
    pub const ERROR_KIND: &str = "driftwatch.error.kind";
    pub const SOURCE_TOPIC: &str = "driftwatch.source.topic";
    pub const SOURCE_PARTITION: &str = "driftwatch.source.partition";
    pub const SOURCE_OFFSET: &str = "driftwatch.source.offset";
}

/// What the rest of the process shares with the pipeline.
#[derive(Clone)]
pub struct Shared {
    pub shell: Arc<Mutex<Shell>>,
    pub metrics: Arc<Metrics>,
    /// Set to ask the pipeline to finish, commit and leave the group.
    pub shutdown: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(shell: Shell, metrics: Arc<Metrics>) -> Self {
        Shared {
            shell: Arc::new(Mutex::new(shell)),
            metrics,
            shutdown: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Shell> {
        lock(&self.shell)
    }
}

fn lock(shell: &Mutex<Shell>) -> MutexGuard<'_, Shell> {
    shell.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a record could not be applied.
struct DeadLetter {
    kind: &'static str,
    reason: String,
}

/// Decodes, applies and produces, one record at a time.
struct Worker<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    producer: &'a FutureProducer,
    encoder: Encoder<RetrainRequest>,
    decoders: HashMap<String, Decoder<MetricEvent>>,
}

impl Worker<'_> {
    /// Decodes and validates one record. `Ok(Err(_))` is a record to
    /// dead-letter; `Err(_)` stops the pipeline (setup or transient failure).
    fn decode(
        &mut self,
        msg: &BorrowedMessage<'_>,
    ) -> Result<Result<MetricEvent, DeadLetter>, PipelineError> {
        let topic = msg.topic();
        let Some(payload) = msg.payload() else {
            return Ok(Err(DeadLetter {
                kind: "empty",
                reason: "record has no value".into(),
            }));
        };
        if !self.decoders.contains_key(topic) {
            let decoder = Decoder::new(self.config.format_for_topic(topic), schemas::METRIC_EVENT)?;
            self.decoders.insert(topic.to_owned(), decoder);
        }
        match self.decoders[topic].decode(payload) {
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

    fn handle(
        &mut self,
        shell: &mut Shell,
        msg: &BorrowedMessage<'_>,
    ) -> Result<(), PipelineError> {
        let started = Instant::now();
        let topic = msg.topic();
        let tp: TopicPartition = (topic.to_owned(), msg.partition());
        let offset = msg.offset();
        let Some(slot) = shell.slots.get(&tp) else {
            // Fetched before a revocation; the new owner reads it again.
            return Ok(());
        };
        let restoring = offset < slot.restore_until;
        if restoring {
            self.metrics
                .records_restored
                .with_label_values(&[topic])
                .inc();
        } else {
            self.metrics
                .records_consumed
                .with_label_values(&[topic])
                .inc();
        }
        let verdict = self.decode(msg)?;

        let Shell {
            engine,
            slots,
            owners,
            book,
            ..
        } = shell;
        let Some(slot) = slots.get_mut(&tp) else {
            return Ok(());
        };
        slot.processed_next = offset + 1;
        match verdict {
            Err(dead) => {
                if !restoring {
                    self.metrics
                        .records_dead_lettered
                        .with_label_values(&[topic, dead.kind])
                        .inc();
                    tracing::warn!(topic, partition = tp.1, offset, kind = dead.kind, reason = %dead.reason, "dead-lettering record");
                    let delivery = self.dead_letter(msg, &dead)?;
                    slot.pending.push(delivery);
                }
            }
            Ok(event) => match engine.apply_event(&mut slot.state, &event) {
                EventOutcome::Applied { request, new_model } => {
                    if !restoring {
                        self.metrics
                            .records_applied
                            .with_label_values(&[topic])
                            .inc();
                    }
                    let lineage = event.model.lineage();
                    if new_model {
                        self.metrics.models_tracked.inc();
                        if let Ownership::Split { other } = owners.claim(&lineage, &tp) {
                            self.metrics.model_split.inc();
                            tracing::warn!(model = %lineage, partition = tp.1, other_partition = other.1,
                                "model seen on two partitions: producers must key telemetry by project/name");
                        }
                    }
                    if let Some(request) = request {
                        if let Some(status) = book.get(&request.request_id) {
                            engine.apply_status(&mut slot.state, status);
                        }
                        if !restoring {
                            let delivery = self.produce_request(&request)?;
                            slot.pending.push(delivery);
                            self.metrics
                                .requests_produced
                                .with_label_values(&[request.action.as_str()])
                                .inc();
                            tracing::info!(request_id = %request.request_id, model = %request.model,
                                action = request.action.as_str(), rule = %request.rule, reason = %request.reason,
                                "retrain request");
                        }
                    }
                }
                EventOutcome::Skipped(reason) => {
                    if !restoring {
                        self.metrics
                            .records_skipped
                            .with_label_values(&[topic, reason.as_str()])
                            .inc();
                    }
                }
            },
        }
        self.metrics
            .processing_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn produce_request(&self, request: &RetrainRequest) -> Result<PendingOutput, PipelineError> {
        let payload = self.encoder.encode(request)?;
        let key = request.model.lineage();
        let topic = &self.config.kafka.output_topic;
        let headers = OwnedHeaders::new().insert(Header {
            key: "driftwatch.request_id",
            value: Some(request.request_id.as_bytes()),
        });
        let record = FutureRecord::to(topic)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        self.send(topic, record)
    }

    fn dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        dead: &DeadLetter,
    ) -> Result<PendingOutput, PipelineError> {
        let topic = &self.config.kafka.dlq_topic;
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: dlq_headers::ERROR,
                value: Some(dead.reason.as_bytes()),
            })
            .insert(Header {
                key: dlq_headers::ERROR_KIND,
                value: Some(dead.kind.as_bytes()),
            })
            .insert(Header {
                key: dlq_headers::SOURCE_TOPIC,
                value: Some(msg.topic().as_bytes()),
            })
            .insert(Header {
                key: dlq_headers::SOURCE_PARTITION,
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: dlq_headers::SOURCE_OFFSET,
                value: Some(offset.as_bytes()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        self.send(topic, record)
    }

    fn send<K, P>(
        &self,
        topic: &str,
        mut record: FutureRecord<'_, K, P>,
    ) -> Result<PendingOutput, PipelineError>
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(PendingOutput {
                        topic: topic.to_owned(),
                        delivery,
                    })
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
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
}

/// Waits for every pending output and stores the offsets they unblock.
fn settle_and_store(
    shared: &Shared,
    consumer: &BaseConsumer<PipelineContext>,
    outputs_label: &str,
    started: Instant,
) -> Result<(), PipelineError> {
    let pending: Vec<PendingOutput> = {
        let mut shell = shared.lock();
        shell
            .slots
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.pending))
            .collect()
    };
    let had_outputs = !pending.is_empty();
    settle(pending).map_err(|error| PipelineError::Delivery {
        topic: "output".into(),
        error,
    })?;
    let mut tpl = TopicPartitionList::new();
    let mut shell = shared.lock();
    for ((topic, partition), slot) in shell.slots.iter_mut() {
        if let Some(next) = slot.commit_candidate() {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(next))?;
            slot.stored = next;
        }
    }
    if tpl.count() > 0 {
        consumer.store_offsets(&tpl)?;
    }
    shared
        .metrics
        .models_tracked
        .set(shell.models_tracked() as i64);
    shared
        .metrics
        .partitions_restoring
        .set(shell.restoring_partitions() as i64);
    let label = if had_outputs { "some" } else { outputs_label };
    shared
        .metrics
        .commit_batch_seconds
        .with_label_values(&[label])
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}

/// Reads every partition of the status topic and routes statuses to the
/// models they name.
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
            StatusOutcome::Applied => "applied",
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
pub fn run(config: &Config, shared: &Shared) -> Result<(), PipelineError> {
    let context = PipelineContext {
        shell: Arc::clone(&shared.shell),
        metrics: Arc::clone(&shared.metrics),
    };
    let consumer: BaseConsumer<PipelineContext> =
        client::group_consumer(&config.kafka).create_with_context(context)?;
    match &config.kafka.input {
        InputTopics::List(topics) => {
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
        }
        InputTopics::Pattern(pattern) => consumer.subscribe(&[pattern.as_str()])?,
    }
    let producer: FutureProducer = client::producer(&config.kafka).create()?;
    let mut statuses = match &config.kafka.status_topic {
        Some(topic) => Some(StatusFeed::new(config, topic)?),
        None => None,
    };
    let mut worker = Worker {
        config,
        metrics: &shared.metrics,
        producer: &producer,
        encoder: Encoder::new(&config.output_format, schemas::RETRAIN_REQUEST)?,
        decoders: HashMap::new(),
    };
    tracing::info!(group = %config.kafka.group_id, "pipeline started");

    let mut batch_started = Instant::now();
    let mut batch_records = 0usize;
    let result = loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            break Ok(());
        }
        let polled = consumer.poll(POLL_TIMEOUT);
        let idle = polled.is_none();
        match polled {
            Some(Ok(msg)) => {
                if batch_records == 0 {
                    batch_started = Instant::now();
                }
                batch_records += 1;
                let mut shell = shared.lock();
                if let Err(e) = worker.handle(&mut shell, &msg) {
                    break Err(e);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
        }
        if let Some(feed) = statuses.as_mut() {
            feed.drain(shared);
        }
        if batch_records > 0
            && (idle
                || batch_records >= SETTLE_RECORDS
                || batch_started.elapsed() >= SETTLE_INTERVAL)
        {
            if let Err(e) = settle_and_store(shared, &consumer, "none", batch_started) {
                break Err(e);
            }
            batch_records = 0;
        }
    };
    if result.is_ok() {
        settle_and_store(shared, &consumer, "none", batch_started)?;
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final commit failed"),
        }
        tracing::info!("pipeline stopped; leaving the group");
    }
    // Dropping the consumer leaves the group; the revocation callback
    // commits what remains.
    drop(consumer);
    producer_flush(&producer);
    result
}

fn producer_flush(producer: &FutureProducer) {
    use rdkafka::producer::Producer;
    if let Err(e) = producer.flush(Duration::from_secs(10)) {
        tracing::warn!(error = %e, "flushing producer on exit");
    }
}
