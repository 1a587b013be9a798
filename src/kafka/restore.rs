//! Restoring partitions' model state from the changelog topic: read the
//! changelog partitions numbered like the input partitions, from the
//! beginning to their end (read_committed), keeping the latest snapshot of
//! each model.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use super::heartbeat::Heartbeat;
use super::outputs::TOMBSTONE_INPUT_OFFSET;
use super::shell::TopicPartition;
use super::{client, PipelineError};
use crate::codec::SnapshotCodec;
use crate::config::Config;
use crate::engine::state::ModelState;
use crate::engine::Engine;
use crate::telemetry::Metrics;

/// No progress for this long while restoring is an error.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);
/// At most one warning this often about a failing restore consumer.
const WARN_INTERVAL: Duration = Duration::from_secs(5);
/// Pause after a consumer error before polling again.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A client context that does not log end-of-partition events, which the
/// restorer asks for and handles itself.
pub struct EofExpected;

impl rdkafka::ClientContext for EofExpected {
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end_of_partition {
            tracing::warn!(error = %error, reason, "librdkafka error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EofExpected {}

/// The input offset a tombstone records (see [`TOMBSTONE_INPUT_OFFSET`]).
fn tombstone_offset(msg: &rdkafka::message::BorrowedMessage<'_>) -> Option<i64> {
    use rdkafka::message::Headers;
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == TOMBSTONE_INPUT_OFFSET)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

/// Reads changelog partitions back into model state.
pub struct Restorer {
    consumer: BaseConsumer<EofExpected>,
    changelog: String,
    codec: SnapshotCodec,
}

impl Restorer {
    pub fn new(config: &Config) -> Result<Self, PipelineError> {
        let mut cfg = client::restore_consumer(&config.kafka);
        cfg.set("enable.partition.eof", "true");
        Ok(Restorer {
            consumer: cfg.create_with_context(EofExpected)?,
            changelog: config.kafka.changelog_topic.clone(),
            codec: SnapshotCodec::new()?,
        })
    }

    fn stalled(&self) -> PipelineError {
        PipelineError::Topics(format!(
            "restoring from {}: no progress for {}s",
            self.changelog,
            STALL_TIMEOUT.as_secs()
        ))
    }

    /// The models of each input partition in `partitions`, restored under
    /// the engine's current policies, read in one pass over the changelog
    /// partitions. The end of a partition is where a fetch reports
    /// end-of-partition (not ListOffsets, which some brokers answer inexactly).
    ///
    /// `committed` (exactly-once mode) holds each input partition's
    /// committed offset: a snapshot claiming input beyond it was written by
    /// a transaction that did not commit, so it is ignored and the model's
    /// previous snapshot stands. A broker that filters aborted transactions
    /// never shows such a snapshot; one that does not (tansu) still restores
    /// only committed state.
    pub fn restore(
        &self,
        engine: &Engine,
        partitions: &[TopicPartition],
        committed: Option<&BTreeMap<TopicPartition, i64>>,
        metrics: &Metrics,
        heartbeat: &Heartbeat,
    ) -> Result<BTreeMap<TopicPartition, BTreeMap<String, ModelState>>, PipelineError> {
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        let mut restored: BTreeMap<TopicPartition, BTreeMap<String, ModelState>> = BTreeMap::new();
        let mut open: BTreeSet<i32> = BTreeSet::new();
        for tp in partitions {
            restored.insert(tp.clone(), BTreeMap::new());
            if open.insert(tp.1) {
                tpl.add_partition_offset(&self.changelog, tp.1, Offset::Beginning)?;
            }
        }
        self.consumer.assign(&tpl)?;
        let mut records = 0u64;
        let mut last_progress = Instant::now();
        let mut last_warning: Option<Instant> = None;
        let result = loop {
            // A long restore is the loop at work, not a hang (a stalled
            // one fails after STALL_TIMEOUT).
            heartbeat.beat();
            if open.is_empty() {
                break Ok(());
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    last_progress = Instant::now();
                    records += 1;
                    metrics.changelog_records_restored.inc();
                    let Some((topic, lineage)) = msg
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| k.split_once('/'))
                    else {
                        continue;
                    };
                    let Some(models) = restored.get_mut(&(topic.to_owned(), msg.partition()))
                    else {
                        continue; // another input topic's state, not assigned here
                    };
                    let snapshot = match msg.payload().map(|p| self.codec.decode(p)) {
                        None => None,
                        Some(Ok(snapshot)) => Some(snapshot),
                        Some(Err(e)) => {
                            tracing::error!(changelog = %self.changelog, partition = msg.partition(), offset = msg.offset(),
                                error = %e, "unreadable snapshot; the model starts fresh");
                            None
                        }
                    };
                    // A snapshot, or a tombstone (no value), claims the
                    // input offset it reflects.
                    let claimed = match &snapshot {
                        Some(snapshot) => Some(snapshot.input_offset),
                        None => tombstone_offset(&msg),
                    };
                    if let (Some(claimed), Some(committed)) = (claimed, committed) {
                        let limit = committed
                            .get(&(topic.to_owned(), msg.partition()))
                            .copied()
                            .unwrap_or(0);
                        if claimed > limit {
                            metrics.changelog_snapshots_uncommitted.inc();
                            tracing::debug!(
                                model = lineage,
                                snapshot_offset = claimed,
                                committed = limit,
                                "ignoring a snapshot of an uncommitted transaction"
                            );
                            continue;
                        }
                    }
                    match snapshot.zip(engine.policy_for(lineage)) {
                        Some((snapshot, policy)) => {
                            models.insert(lineage.to_owned(), snapshot.restore(policy));
                        }
                        None => {
                            models.remove(lineage);
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => {
                    // Transient (a broker restarting): librdkafka reconnects.
                    // Say so once per interval, and do not spin on it.
                    if last_warning.is_none_or(|at| at.elapsed() >= WARN_INTERVAL) {
                        tracing::warn!(changelog = %self.changelog, error = %e, "restore consumer; retrying");
                        last_warning = Some(Instant::now());
                    }
                    if last_progress.elapsed() > STALL_TIMEOUT {
                        break Err(self.stalled());
                    }
                    std::thread::sleep(ERROR_BACKOFF);
                }
                None if last_progress.elapsed() > STALL_TIMEOUT => break Err(self.stalled()),
                None => {}
            }
        };
        self.consumer.unassign()?;
        result?;
        metrics
            .restore_seconds
            .observe(started.elapsed().as_secs_f64());
        let models: usize = restored.values().map(BTreeMap::len).sum();
        tracing::info!(
            partitions = partitions.len(),
            models,
            changelog_records = records,
            seconds = started.elapsed().as_secs_f64(),
            "state restored"
        );
        Ok(restored)
    }
}
