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
use super::phase::{Phase, Transition};
use super::shell::{Shell, TopicPartition};
use crate::telemetry::Metrics;

/// Context of the group consumer.
pub struct PipelineContext {
    pub shell: Arc<Mutex<Shell>>,
    pub metrics: Arc<Metrics>,
    pub outputs: Arc<Outputs>,
    pub client_errors: Arc<ClientErrors>,
    /// The consumer reads committed records only (exactly-once): lag is
    /// measured to the last stable offset.
    pub read_committed: bool,
}

/// Records of an assigned partition not yet processed: from the position
/// (the offset after the last record handed to the pipeline, or, before
/// the first, the committed offset) to the end of the partition (the last
/// stable offset when reading committed, else the high watermark).
///
/// librdkafka's own `consumer_lag` counts from the offset the consumer
/// committed itself, which exactly-once never does (offsets go with the
/// transaction), so it stays unknown there.
pub fn partition_lag(p: &rdkafka::statistics::Partition, read_committed: bool) -> Option<i64> {
    if p.partition < 0 || !p.desired {
        return None;
    }
    let end = if read_committed {
        p.ls_offset
    } else {
        p.hi_offset
    };
    let position = [p.app_offset, p.committed_offset]
        .into_iter()
        .find(|&o| o >= 0)?;
    (end >= 0).then(|| (end - position).max(0))
}

impl PipelineContext {
    fn shell(&self) -> MutexGuard<'_, Shell> {
        super::shell::lock(&self.shell)
    }

    fn on_assign(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        {
            let mut shell = self.shell();
            shell.note_assignment();
            for elem in tpl.elements() {
                let tp: TopicPartition = (elem.topic().to_owned(), elem.partition());
                tracing::info!(topic = %tp.0, partition = tp.1, "partition assigned; restoring its state");
                shell.assign(tp);
            }
            shell.publish_gauges(&self.metrics);
        }
        let assigned = match consumer.rebalance_protocol() {
            RebalanceProtocol::Cooperative => consumer.incremental_assign(tpl),
            _ => consumer.assign(tpl),
        };
        if let Err(e) = assigned {
            tracing::error!(error = %e, "assigning partitions failed");
            self.shell().transition(Transition::Fail);
            return;
        }
        if tpl.count() > 0 {
            if let Err(e) = consumer.pause(tpl) {
                tracing::error!(error = %e, "pausing partitions for restore failed");
                self.shell().transition(Transition::Fail);
            }
        }
    }

    fn on_revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let lost = consumer.assignment_lost();
        if lost {
            tracing::warn!("assignment lost: discarding uncommitted work");
            self.outputs.abort(&mut self.shell());
        } else if self.shell().phase() != Phase::Failed {
            match self.outputs.commit(&self.shell, consumer, true) {
                Ok(()) => {}
                Err(CommitFailure::Aborted(e)) => {
                    tracing::warn!(error = %e, "commit on revocation aborted; the next owner reprocesses")
                }
                Err(CommitFailure::Fatal(e)) => {
                    tracing::error!(error = %e, "commit on revocation failed")
                }
            }
        }
        {
            let mut shell = self.shell();
            for elem in tpl.elements() {
                let tp: TopicPartition = (elem.topic().to_owned(), elem.partition());
                if shell.release(&tp).is_some() {
                    tracing::info!(topic = %tp.0, partition = tp.1, lost, "partition revoked");
                }
                // Its lag is the new owner's to report.
                let _ = self
                    .metrics
                    .consumer_lag
                    .remove_label_values(&[tp.0.as_str(), &tp.1.to_string()]);
            }
            shell.publish_gauges(&self.metrics);
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
                if let Some(lag) = partition_lag(p, self.read_committed) {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topic.as_str(), &partition.to_string()])
                        .set(lag);
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

#[cfg(test)]
mod tests {
    use super::partition_lag;
    use rdkafka::statistics::Partition;

    fn partition(app: i64, committed: i64, hi: i64, ls: i64) -> Partition {
        Partition {
            partition: 0,
            desired: true,
            app_offset: app,
            committed_offset: committed,
            hi_offset: hi,
            ls_offset: ls,
            // What librdkafka reports when the consumer never commits itself.
            consumer_lag: -1,
            ..Partition::default()
        }
    }

    #[test]
    fn lag_counts_from_the_position_to_the_stable_end_when_reading_committed() {
        // Exactly-once: committed offsets are unknown to librdkafka.
        assert_eq!(
            partition_lag(&partition(700, -1001, 1000, 950), true),
            Some(250)
        );
        assert_eq!(
            partition_lag(&partition(700, -1001, 1000, 950), false),
            Some(300)
        );
    }

    #[test]
    fn before_the_first_record_lag_counts_from_the_committed_offset() {
        assert_eq!(
            partition_lag(&partition(-1001, 400, 1000, 1000), true),
            Some(600)
        );
        assert_eq!(
            partition_lag(&partition(-1001, -1001, 1000, 1000), true),
            None
        );
    }

    #[test]
    fn partitions_not_assigned_here_or_without_an_end_have_no_lag() {
        let mut other = partition(700, 600, 1000, 1000);
        other.desired = false;
        assert_eq!(partition_lag(&other, true), None);
        assert_eq!(
            partition_lag(&partition(700, 600, -1001, -1001), true),
            None
        );
        // Never negative (an end read before the position moved past it).
        assert_eq!(
            partition_lag(&partition(1010, 600, 1000, 1000), false),
            Some(0)
        );
    }
}
