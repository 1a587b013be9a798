//! The consumer context: rebalance handling and librdkafka statistics.
//!
//! On assignment each new partition gets a slot marked restoring and is
//! paused; the pipeline loop restores its state from the changelog and then
//! resumes it. Consumption starts at the group's committed offset. On
//! revocation everything processed so far is committed (the transaction, or
//! the acknowledged outputs, snapshots and offsets) before the partition is
//! released; a lost assignment is aborted instead.

use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;

use super::client_errors::ClientErrors;
use super::outputs::{CommitFailure, Outputs};
use super::shell::{Shell, Slot, TopicPartition};
use crate::telemetry::Metrics;

/// Context of the group consumer.
pub struct PipelineContext {
    pub shell: Arc<Mutex<Shell>>,
    pub metrics: Arc<Metrics>,
    pub outputs: Arc<Outputs>,
    pub client_errors: Arc<ClientErrors>,
}

impl PipelineContext {
    fn shell(&self) -> MutexGuard<'_, Shell> {
        super::shell::lock(&self.shell)
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        {
            let mut shell = self.shell();
            shell.assigned_once = true;
            for elem in tpl.elements() {
                let tp: TopicPartition = (elem.topic().to_owned(), elem.partition());
                tracing::info!(topic = %tp.0, partition = tp.1, "partition assigned; restoring its state");
                shell.slots.insert(tp, Slot::restoring());
            }
            self.metrics
                .partitions_assigned
                .set(shell.slots.len() as i64);
            self.metrics
                .partitions_restoring
                .set(shell.restoring_partitions() as i64);
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = assigned {
            tracing::error!(error = %e, "assigning partitions failed");
            self.shell().failed = true;
            return;
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.pause(tpl) {
                tracing::error!(error = %e, "pausing partitions for restore failed");
                self.shell().failed = true;
            }
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let lost = consumer.assignment_lost();
        {
            let mut shell = self.shell();
            if lost {
                tracing::warn!("assignment lost: discarding uncommitted work");
                self.outputs.abort(&mut shell);
            } else if !shell.failed {
                match self.outputs.commit(&mut shell, consumer, true) {
                    Ok(()) => {}
                    Err(CommitFailure::Aborted(e)) => {
                        tracing::warn!(error = %e, "commit on revocation aborted; the next owner reprocesses")
                    }
                    Err(CommitFailure::Fatal(e)) => {
                        tracing::error!(error = %e, "commit on revocation failed")
                    }
                }
            }
            for elem in tpl.elements() {
                let tp: TopicPartition = (elem.topic().to_owned(), elem.partition());
                if shell.release(&tp).is_some() {
                    tracing::info!(topic = %tp.0, partition = tp.1, lost, "partition revoked");
                }
            }
            self.metrics
                .partitions_assigned
                .set(shell.slots.len() as i64);
            self.metrics
                .partitions_restoring
                .set(shell.restoring_partitions() as i64);
            self.metrics
                .models_tracked
                .set(shell.models_tracked() as i64);
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

impl ClientContext for PipelineContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.client_errors.record(&error, reason);
    }

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
