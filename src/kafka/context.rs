//! The consumer context: rebalance handling and librdkafka statistics.
//!
//! On assignment each new partition gets a fresh slot and is read from the
//! beginning: records below the group's committed offset rebuild the
//! partition's state without producing again (see [`Slot::restore_until`]).
//! On revocation the partition's outputs are awaited, its offset committed
//! synchronously, and its state dropped, all before the partition is
//! released to another instance.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use super::shell::{Shell, Slot, TopicPartition};
use crate::telemetry::Metrics;

/// How long an assignment waits for the group's committed offsets.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(15);

/// Context of the group consumer.
pub struct PipelineContext {
    pub shell: Arc<Mutex<Shell>>,
    pub metrics: Arc<Metrics>,
}

impl PipelineContext {
    fn shell(&self) -> MutexGuard<'_, Shell> {
        // A poisoned lock means a panic elsewhere; the state is still the
        // best we have, and the process is going down anyway.
        self.shell.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let committed = committed_offsets(consumer, tpl);
        let mut assignment = TopicPartitionList::new();
        {
            let mut shell = self.shell();
            shell.assigned_once = true;
            for elem in tpl.elements() {
                let tp: TopicPartition = (elem.topic().to_owned(), elem.partition());
                let restore_until = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(&tp.0, tp.1))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(n) => Some(n),
                        _ => None,
                    })
                    .unwrap_or(0);
                let start = if committed.is_some() {
                    Offset::Beginning
                } else {
                    Offset::Stored
                };
                if let Err(e) = assignment.add_partition_offset(&tp.0, tp.1, start) {
                    tracing::error!(topic = %tp.0, partition = tp.1, error = %e, "building assignment");
                }
                tracing::info!(topic = %tp.0, partition = tp.1, restore_until, "partition assigned");
                shell.slots.insert(tp, Slot::new(restore_until));
            }
            self.metrics
                .partitions_assigned
                .set(shell.slots.len() as i64);
            self.metrics
                .partitions_restoring
                .set(shell.restoring_partitions() as i64);
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(&assignment),
            _ => consumer.assign(&assignment),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "assigning partitions failed");
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let lost = consumer.assignment_lost();
        let mut commit = TopicPartitionList::new();
        {
            let mut shell = self.shell();
            for elem in tpl.elements() {
                let tp: TopicPartition = (elem.topic().to_owned(), elem.partition());
                let Some(slot) = shell.release(&tp) else {
                    continue;
                };
                let candidate = slot.commit_candidate();
                let delivered = settle(slot.pending);
                if let Err(e) = &delivered {
                    tracing::error!(topic = %tp.0, partition = tp.1, error = %e,
                        "outputs not acknowledged before revocation; the next owner reprocesses");
                }
                if let (Ok(()), false, Some(next)) = (&delivered, lost, candidate) {
                    if let Err(e) = commit.add_partition_offset(&tp.0, tp.1, Offset::Offset(next)) {
                        tracing::error!(error = %e, "building commit list");
                    }
                }
                tracing::info!(topic = %tp.0, partition = tp.1, lost, "partition revoked");
            }
            self.metrics
                .partitions_assigned
                .set(shell.slots.len() as i64);
            self.metrics
                .models_tracked
                .set(shell.models_tracked() as i64);
        }
        if commit.count() > 0 {
            if let Err(e) = consumer.commit(&commit, CommitMode::Sync) {
                tracing::warn!(error = %e, "committing revoked partitions failed");
            }
        }
        let result = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "unassigning partitions failed");
        }
    }
}

/// The group's committed offsets for `tpl`, retried a few times; `None` if
/// they cannot be read (state then starts empty at the stored position).
fn committed_offsets(
    consumer: &BaseConsumer<PipelineContext>,
    tpl: &TopicPartitionList,
) -> Option<TopicPartitionList> {
    if tpl.count() == 0 {
        return Some(TopicPartitionList::new());
    }
    for attempt in 1..=3 {
        match consumer.committed_offsets(tpl.clone(), COMMITTED_TIMEOUT) {
            Ok(committed) => return Some(committed),
            Err(e) => tracing::warn!(attempt, error = %e, "reading committed offsets failed"),
        }
    }
    tracing::error!("committed offsets unavailable: resuming without rebuilding state");
    None
}

/// Waits for every pending output; the first failure is returned.
pub fn settle(pending: Vec<super::shell::PendingOutput>) -> Result<(), String> {
    let mut first_error = None;
    for output in pending {
        let result = futures::executor::block_on(output.delivery);
        let error = match result {
            Ok(Ok(_)) => continue,
            Ok(Err((e, _))) => e.to_string(),
            Err(_) => "producer dropped the delivery".to_owned(),
        };
        first_error.get_or_insert(format!("{}: {}", output.topic, error));
    }
    first_error.map_or(Ok(()), Err)
}

impl ClientContext for PipelineContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for PipelineContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.on_assign(consumer, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.on_revoke(consumer, tpl),
            other => {
                tracing::error!(error = ?other, "rebalance error; releasing the assignment");
                self.on_revoke(consumer, tpl);
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::debug!(error = %e, "offset commit");
        }
    }
}
