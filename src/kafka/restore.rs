//! Restoring a partition's model state from the changelog topic: read the
//! changelog partition numbered like the input partition, from the
//! beginning to its end (read_committed), keeping the latest snapshot of
//! each model of that input topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{client, PipelineError};
use crate::codec::SnapshotCodec;
use crate::config::Config;
use crate::engine::state::ModelState;
use crate::engine::Engine;
use crate::telemetry::Metrics;

/// No progress for this long while restoring is an error.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads changelog partitions back into model state.
pub struct Restorer {
    consumer: BaseConsumer,
    changelog: String,
    codec: SnapshotCodec,
}

impl Restorer {
    pub fn new(config: &Config) -> Result<Self, PipelineError> {
        let mut cfg = client::restore_consumer(&config.kafka);
        cfg.set("enable.partition.eof", "true");
        Ok(Restorer {
            consumer: cfg.create()?,
            changelog: config.kafka.changelog_topic.clone(),
            codec: SnapshotCodec::new()?,
        })
    }

    /// The models of input `topic` whose state lives in changelog
    /// `partition`, restored under the engine's current policies.
    /// The end of the partition is where a fetch reports end-of-partition
    /// (not ListOffsets, which some brokers answer inexactly).
    pub fn restore(
        &self,
        engine: &Engine,
        topic: &str,
        partition: i32,
        metrics: &Metrics,
    ) -> Result<BTreeMap<String, ModelState>, PipelineError> {
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.changelog, partition, Offset::Beginning)?;
        self.consumer.assign(&tpl)?;
        let prefix = format!("{topic}/");
        let mut models = BTreeMap::new();
        let mut records = 0u64;
        let mut last_progress = Instant::now();
        let result = loop {
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(msg)) => {
                    last_progress = Instant::now();
                    records += 1;
                    let Some(lineage) = msg
                        .key()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .and_then(|k| k.strip_prefix(&prefix))
                    else {
                        continue;
                    };
                    let Some(payload) = msg.payload() else {
                        models.remove(lineage);
                        continue;
                    };
                    match self.codec.decode(payload) {
                        Ok(snapshot) => match engine.policy_for(lineage) {
                            Some(policy) => {
                                models.insert(lineage.to_owned(), snapshot.restore(policy));
                            }
                            None => {
                                models.remove(lineage);
                            }
                        },
                        Err(e) => {
                            tracing::error!(changelog = %self.changelog, partition, offset = msg.offset(), error = %e,
                                "unreadable snapshot; the model starts fresh");
                            models.remove(lineage);
                        }
                    }
                    metrics.changelog_records_restored.inc();
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
                Some(Err(e)) => {
                    tracing::warn!(changelog = %self.changelog, partition, error = %e, "restore consumer")
                }
                None if last_progress.elapsed() > STALL_TIMEOUT => {
                    break Err(PipelineError::Topics(format!(
                        "restoring {}/{partition}: no progress for {}s",
                        self.changelog,
                        STALL_TIMEOUT.as_secs()
                    )))
                }
                None => {}
            }
        };
        self.consumer.unassign()?;
        result?;
        metrics
            .restore_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::info!(
            topic,
            partition,
            models = models.len(),
            changelog_records = records,
            seconds = started.elapsed().as_secs_f64(),
            "state restored"
        );
        Ok(models)
    }
}
