//! Everything driftwatch writes (retrain requests, dead letters, state
//! snapshots) and how it becomes durable together with the consumed offsets.
//!
//! Exactly-once: one transactional producer per instance; requests, dead
//! letters, changelog snapshots and the consumed offsets commit in one
//! transaction (KIP-447, with the consumer's group metadata).
//! At-least-once: outputs are awaited, then the snapshots, then offsets are
//! stored; a model's snapshot records the input offset it reflects, so a
//! restarted instance does not apply a record twice to state.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, ToBytes};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::client_errors::{ClientErrors, ReportingContext};
use super::shell::{PendingOutput, Shell, TopicPartition};
use super::{client, PipelineError};
use crate::codec::{schemas, Encoder, SnapshotCodec};
use crate::config::{Config, Processing};
use crate::engine::snapshot::ModelSnapshot;
use crate::model::RetrainRequest;

/// How long transactional calls may take before they count as failed.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Header names on dead-lettered records.
pub mod dlq_headers {
    pub const ERROR: &str = "driftwatch.error";
    pub const ERROR_KIND: &str = "driftwatch.error.kind";
    pub const SOURCE_TOPIC: &str = "driftwatch.source.topic";
    pub const SOURCE_PARTITION: &str = "driftwatch.source.partition";
    pub const SOURCE_OFFSET: &str = "driftwatch.source.offset";
}

/// Why a record could not be applied.
pub struct DeadLetter {
    pub kind: &'static str,
    pub reason: String,
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

/// The producer and encoders of everything driftwatch writes.
pub struct Outputs {
    producer: FutureProducer<ReportingContext>,
    processing: Processing,
    output_topic: String,
    dlq_topic: String,
    changelog_topic: String,
    requests: Encoder<RetrainRequest>,
    snapshots: SnapshotCodec,
}

impl Outputs {
    /// Creates the producer; in exactly-once mode also initialises
    /// transactions, which fences a previous incarnation of this instance.
    pub fn new(config: &Config, client_errors: Arc<ClientErrors>) -> Result<Self, PipelineError> {
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
        let producer: FutureProducer<ReportingContext> =
            cfg.create_with_context(ReportingContext(client_errors))?;
        if k.processing == Processing::ExactlyOnce {
            producer.init_transactions(TXN_TIMEOUT)?;
        }
        Ok(Outputs {
            producer,
            processing: k.processing,
            output_topic: k.output_topic.clone(),
            dlq_topic: k.dlq_topic.clone(),
            changelog_topic: k.changelog_topic.clone(),
            requests: Encoder::new(&config.output_format, schemas::RETRAIN_REQUEST)?,
            snapshots: SnapshotCodec::new()?,
        })
    }

    pub fn processing(&self) -> Processing {
        self.processing
    }

    /// Opens a transaction if none is open (exactly-once only).
    pub fn begin(&self, shell: &mut Shell) -> Result<(), PipelineError> {
        if self.processing == Processing::ExactlyOnce && !shell.txn_open {
            self.producer.begin_transaction()?;
            shell.txn_open = true;
        }
        Ok(())
    }

    pub fn send_request(&self, request: &RetrainRequest) -> Result<PendingOutput, PipelineError> {
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

    pub fn send_dead_letter(
        &self,
        msg: &BorrowedMessage<'_>,
        dead: &DeadLetter,
    ) -> Result<PendingOutput, PipelineError> {
        let partition = msg.partition().to_string();
        let offset = msg.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(header(dlq_headers::ERROR, dead.reason.as_bytes()))
            .insert(header(dlq_headers::ERROR_KIND, dead.kind.as_bytes()))
            .insert(header(dlq_headers::SOURCE_TOPIC, msg.topic().as_bytes()))
            .insert(header(dlq_headers::SOURCE_PARTITION, partition.as_bytes()))
            .insert(header(dlq_headers::SOURCE_OFFSET, offset.as_bytes()));
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.dlq_topic).headers(headers);
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        self.send(&self.dlq_topic, record)
    }

    /// The changelog key of a model held for input `topic`.
    pub fn changelog_key(topic: &str, lineage: &str) -> String {
        format!("{topic}/{lineage}")
    }

    /// Produces the snapshots of every dirty model, to the changelog
    /// partition numbered like the input partition.
    fn send_snapshots(&self, shell: &mut Shell) -> Result<Vec<PendingOutput>, PipelineError> {
        let mut sent = Vec::new();
        let Shell { engine, slots, .. } = shell;
        for ((topic, partition), slot) in slots.iter_mut() {
            let offset = slot.processed_next.unwrap_or(0);
            for lineage in std::mem::take(&mut slot.dirty) {
                let Some(model) = slot.state.models.get_mut(&lineage) else {
                    continue;
                };
                let policy = engine.policy_for(&lineage);
                model.input_offset = offset;
                let payload = self
                    .snapshots
                    .encode(&ModelSnapshot::capture(model, policy, offset))?;
                let key = Self::changelog_key(topic, &lineage);
                let record = FutureRecord::to(&self.changelog_topic)
                    .partition(*partition)
                    .key(&key)
                    .payload(&payload);
                sent.push(self.send(&self.changelog_topic, record)?);
            }
        }
        Ok(sent)
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
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    return Ok(PendingOutput {
                        topic: topic.to_owned(),
                        delivery,
                    })
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(10));
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
    pub fn commit<C: ConsumerContext>(
        &self,
        shell: &mut Shell,
        consumer: &BaseConsumer<C>,
        sync: bool,
    ) -> Result<(), CommitFailure> {
        if shell.failed {
            return Err(CommitFailure::Fatal(PipelineError::Delivery {
                topic: "outputs".into(),
                error: "an earlier output failed; nothing more is committed".into(),
            }));
        }
        let result = match self.processing {
            Processing::ExactlyOnce => self.commit_transaction(shell, consumer),
            Processing::AtLeastOnce => self.commit_at_least_once(shell, consumer, sync),
        };
        if let Err(CommitFailure::Fatal(_)) = &result {
            shell.failed = true;
        }
        result
    }

    fn offsets(
        shell: &Shell,
    ) -> Result<(TopicPartitionList, Vec<(TopicPartition, i64)>), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        let mut moved = Vec::new();
        for (tp, slot) in &shell.slots {
            if let Some(next) = slot.commit_candidate() {
                tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(next))?;
                moved.push((tp.clone(), next));
            }
        }
        Ok((tpl, moved))
    }

    fn mark_committed(shell: &mut Shell, moved: Vec<(TopicPartition, i64)>) {
        for (tp, next) in moved {
            if let Some(slot) = shell.slots.get_mut(&tp) {
                slot.committed_next = Some(next);
            }
        }
    }

    fn commit_transaction<C: ConsumerContext>(
        &self,
        shell: &mut Shell,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), CommitFailure> {
        let dirty = shell.slots.values().any(|s| !s.dirty.is_empty());
        if !shell.txn_open && !dirty {
            return Ok(());
        }
        if !shell.txn_open {
            if let Err(e) = self.producer.begin_transaction() {
                return self.handle_transaction_error(shell, e);
            }
            shell.txn_open = true;
        }
        let snapshots = match self.send_snapshots(shell) {
            Ok(sent) => sent,
            Err(PipelineError::Kafka(e)) => return self.handle_transaction_error(shell, e),
            Err(other) => return Err(CommitFailure::Fatal(other)),
        };
        // Await every delivery before committing: the commit would flush
        // anyway, but rust-rdkafka's flush polls in fixed 100 ms slices
        // while the producer's own thread serves the delivery reports, so a
        // commit with reports outstanding costs at least 100 ms.
        let pending: Vec<PendingOutput> = shell
            .slots
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.pending))
            .chain(snapshots)
            .collect();
        if let Err(error) = settle(pending) {
            return self.abort_and_rewind(shell, error);
        }
        let attempt = (|| -> Result<Vec<(TopicPartition, i64)>, KafkaError> {
            let (tpl, moved) = Self::offsets(shell)?;
            if tpl.count() > 0 {
                let metadata = consumer
                    .group_metadata()
                    .ok_or(KafkaError::Global(RDKafkaErrorCode::State))?;
                self.producer
                    .send_offsets_to_transaction(&tpl, &metadata, TXN_TIMEOUT)?;
            }
            self.producer.commit_transaction(TXN_TIMEOUT)?;
            Ok(moved)
        })();
        match attempt {
            Ok(moved) => {
                shell.txn_open = false;
                Self::mark_committed(shell, moved);
                Ok(())
            }
            Err(e) => self.handle_transaction_error(shell, e),
        }
    }

    /// Aborts where possible; fatal errors (fencing) stop the instance.
    fn handle_transaction_error(
        &self,
        shell: &mut Shell,
        error: KafkaError,
    ) -> Result<(), CommitFailure> {
        let fatal = match &error {
            KafkaError::Transaction(e) => e.is_fatal(),
            _ => false,
        };
        if fatal {
            tracing::error!(error = %error, "fatal transaction error (fenced?); stopping");
            return Err(CommitFailure::Fatal(error.into()));
        }
        self.abort_and_rewind(shell, error.to_string())
    }

    /// Aborts the open transaction and asks the loop to rewind to the
    /// committed offsets; a failed abort is fatal.
    fn abort_and_rewind(&self, shell: &mut Shell, reason: String) -> Result<(), CommitFailure> {
        tracing::warn!(error = %reason, "transaction failed; aborting and rewinding to the committed offsets");
        for slot in shell.slots.values_mut() {
            slot.pending.clear();
        }
        if let Err(abort) = self.producer.abort_transaction(TXN_TIMEOUT) {
            tracing::error!(error = %abort, "aborting the transaction failed; stopping");
            return Err(CommitFailure::Fatal(abort.into()));
        }
        shell.txn_open = false;
        shell.rewind = true;
        Err(CommitFailure::Aborted(reason))
    }

    /// Aborts the open transaction (a lost assignment): its effects are
    /// discarded and every slot is rewound.
    pub fn abort(&self, shell: &mut Shell) {
        if self.processing == Processing::ExactlyOnce && shell.txn_open {
            match self.producer.abort_transaction(TXN_TIMEOUT) {
                Ok(()) => {
                    shell.txn_open = false;
                    shell.rewind = true;
                    for slot in shell.slots.values_mut() {
                        slot.pending.clear();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "aborting after a lost assignment failed");
                    shell.failed = true;
                }
            }
        }
    }

    fn commit_at_least_once<C: ConsumerContext>(
        &self,
        shell: &mut Shell,
        consumer: &BaseConsumer<C>,
        sync: bool,
    ) -> Result<(), CommitFailure> {
        // Outputs first: a snapshot may only claim records whose outputs
        // are acknowledged.
        let pending: Vec<PendingOutput> = shell
            .slots
            .values_mut()
            .flat_map(|s| std::mem::take(&mut s.pending))
            .collect();
        let fatal = |e: PipelineError| CommitFailure::Fatal(e);
        settle(pending).map_err(|error| {
            fatal(PipelineError::Delivery {
                topic: "outputs".into(),
                error,
            })
        })?;
        let snapshots = self.send_snapshots(shell).map_err(fatal)?;
        settle(snapshots).map_err(|error| {
            fatal(PipelineError::Delivery {
                topic: self.changelog_topic.clone(),
                error,
            })
        })?;
        let (tpl, moved) = Self::offsets(shell).map_err(|e| fatal(e.into()))?;
        if tpl.count() > 0 {
            let result = if sync {
                consumer.commit(&tpl, CommitMode::Sync)
            } else {
                consumer.store_offsets(&tpl)
            };
            result.map_err(|e| fatal(e.into()))?;
        }
        Self::mark_committed(shell, moved);
        Ok(())
    }

    /// Flushes the producer on exit.
    pub fn flush(&self) {
        if let Err(e) = self.producer.flush(Duration::from_secs(10)) {
            tracing::warn!(error = %e, "flushing producer on exit");
        }
    }
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
