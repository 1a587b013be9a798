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
/// Longest single wait for a changelog record within a slice.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// A client context that does not log end-of-partition events, which the
/// restorer asks for and handles itself, and logs "all brokers down" (a
/// consequence of the connection errors logged before it, repeated at every
/// reconnect while the broker is away) at debug level only.
pub struct EofExpected;

impl rdkafka::ClientContext for EofExpected {
    fn error(&self, error: KafkaError, reason: &str) {
        let end_of_partition = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        let all_down = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        if all_down {
            tracing::debug!(error = %error, reason, "librdkafka error");
        } else if !end_of_partition {
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

    /// Starts restoring the models of each input partition in `partitions`
    /// (with the number of the assignment each is restored for): the
    /// changelog partitions numbered like them are assigned from the
    /// beginning. The job is then advanced by [`Restorer::advance`] a time
    /// slice at a time, so the pipeline keeps processing its running
    /// partitions, and polling its group, while it restores.
    ///
    /// `committed` (exactly-once mode) holds each input partition's
    /// committed offset: a snapshot claiming input beyond it was written by
    /// a transaction that did not commit, so it is ignored and the model's
    /// previous snapshot stands. Kafka's read_committed fetch never shows a
    /// snapshot of an aborted transaction, so there the check never fires;
    /// it is kept as a cheap guard (one comparison per snapshot) that keeps
    /// restore right on a broker that lists no aborted transactions
    /// (tansu), and the counter `changelog_snapshots_uncommitted_total`
    /// shows when it does.
    pub fn start(
        &self,
        engine: Engine,
        partitions: Vec<(TopicPartition, u64)>,
        committed: Option<BTreeMap<TopicPartition, i64>>,
    ) -> Result<RestoreJob, PipelineError> {
        let mut tpl = TopicPartitionList::new();
        let mut restored = BTreeMap::new();
        let mut open = BTreeSet::new();
        for (tp, _) in &partitions {
            restored.insert(tp.clone(), BTreeMap::new());
            if open.insert(tp.1) {
                tpl.add_partition_offset(&self.changelog, tp.1, Offset::Beginning)?;
            }
        }
        self.consumer.assign(&tpl)?;
        let now = Instant::now();
        Ok(RestoreJob {
            engine,
            partitions,
            committed,
            restored,
            open,
            records: 0,
            started: now,
            last_progress: now,
            last_warning: None,
        })
    }

    /// Reads the changelog for `job` for about `slice` (at least one poll).
    /// Returns true once every changelog partition was read to its end:
    /// the end of a partition is where a fetch reports end-of-partition
    /// (not ListOffsets, which some brokers answer inexactly).
    pub fn advance(
        &self,
        job: &mut RestoreJob,
        slice: Duration,
        metrics: &Metrics,
    ) -> Result<bool, PipelineError> {
        let until = Instant::now() + slice;
        loop {
            if job.open.is_empty() {
                return Ok(true);
            }
            let wait = until
                .saturating_duration_since(Instant::now())
                .min(POLL_WAIT);
            match self.consumer.poll(wait) {
                Some(Ok(msg)) => {
                    job.last_progress = Instant::now();
                    job.records += 1;
                    metrics.changelog_records_restored.inc();
                    self.read(job, &msg, metrics);
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    job.open.remove(&p);
                }
                Some(Err(e)) => {
                    // Transient (a broker restarting): librdkafka reconnects.
                    // Say so once per interval, and do not spin on it.
                    if job
                        .last_warning
                        .is_none_or(|at| at.elapsed() >= WARN_INTERVAL)
                    {
                        tracing::warn!(changelog = %self.changelog, error = %e, "restore consumer; retrying");
                        job.last_warning = Some(Instant::now());
                    }
                    if job.last_progress.elapsed() > STALL_TIMEOUT {
                        return Err(self.stalled());
                    }
                    std::thread::sleep(ERROR_BACKOFF.min(slice));
                }
                None if job.last_progress.elapsed() > STALL_TIMEOUT => return Err(self.stalled()),
                None => {}
            }
            if Instant::now() >= until {
                return Ok(job.open.is_empty());
            }
        }
    }

    /// Applies one changelog record to the job: the latest snapshot of
    /// each model stands, a tombstone removes it.
    fn read(
        &self,
        job: &mut RestoreJob,
        msg: &rdkafka::message::BorrowedMessage<'_>,
        metrics: &Metrics,
    ) {
        let Some((topic, lineage)) = msg
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.split_once('/'))
        else {
            return;
        };
        let tp = (topic.to_owned(), msg.partition());
        let Some(models) = job.restored.get_mut(&tp) else {
            return; // another input topic's state, not assigned here
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
        // A snapshot, or a tombstone (no value), claims the input offset
        // it reflects.
        let claimed = match &snapshot {
            Some(snapshot) => Some(snapshot.input_offset),
            None => tombstone_offset(msg),
        };
        if let (Some(claimed), Some(committed)) = (claimed, &job.committed) {
            let limit = committed.get(&tp).copied().unwrap_or(0);
            if claimed > limit {
                metrics.changelog_snapshots_uncommitted.inc();
                tracing::debug!(
                    model = lineage,
                    snapshot_offset = claimed,
                    committed = limit,
                    "ignoring a snapshot of an uncommitted transaction"
                );
                return;
            }
        }
        match snapshot.zip(job.engine.policy_for(lineage)) {
            Some((snapshot, policy)) => {
                models.insert(lineage.to_owned(), snapshot.restore(policy));
            }
            None => {
                models.remove(lineage);
            }
        }
    }

    /// Ends `job` (its changelog partitions are unassigned) and hands back
    /// the models restored for each partition, with the number of the
    /// assignment they were restored for.
    pub fn finish(&self, job: RestoreJob, metrics: &Metrics) -> Result<Restored, PipelineError> {
        self.consumer.unassign()?;
        metrics
            .restore_seconds
            .observe(job.started.elapsed().as_secs_f64());
        let models: usize = job.restored.values().map(BTreeMap::len).sum();
        tracing::info!(
            partitions = job.partitions.len(),
            models,
            changelog_records = job.records,
            seconds = job.started.elapsed().as_secs_f64(),
            "state restored"
        );
        let RestoreJob {
            partitions,
            mut restored,
            ..
        } = job;
        Ok(partitions
            .into_iter()
            .map(|(tp, assignment)| {
                let models = restored.remove(&tp).unwrap_or_default();
                (tp, assignment, models)
            })
            .collect())
    }

    /// Drops `job` unfinished: none of its partitions awaits it any more.
    pub fn cancel(&self, job: RestoreJob) -> Result<(), PipelineError> {
        self.consumer.unassign()?;
        tracing::debug!(
            partitions = job.partitions.len(),
            "restore dropped: its partitions were revoked or assigned anew"
        );
        Ok(())
    }

    /// Restores `partitions` at once, blocking until done (benchmarks and
    /// tools; the pipeline advances a job in slices instead).
    pub fn restore(
        &self,
        engine: &Engine,
        partitions: &[TopicPartition],
        committed: Option<&BTreeMap<TopicPartition, i64>>,
        metrics: &Metrics,
        heartbeat: &Heartbeat,
    ) -> Result<BTreeMap<TopicPartition, BTreeMap<String, ModelState>>, PipelineError> {
        let numbered = partitions.iter().map(|tp| (tp.clone(), 0)).collect();
        let mut job = self.start(engine.clone(), numbered, committed.cloned())?;
        loop {
            heartbeat.beat();
            match self.advance(&mut job, Duration::from_millis(200), metrics) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    self.cancel(job)?;
                    return Err(e);
                }
            }
        }
        Ok(self
            .finish(job, metrics)?
            .into_iter()
            .map(|(tp, _, models)| (tp, models))
            .collect())
    }
}

/// What a restore hands back: per partition, the number of the assignment
/// it was restored for and its models.
pub type Restored = Vec<(TopicPartition, u64, BTreeMap<String, ModelState>)>;

/// A restore under way: the partitions it restores and what it read so far.
pub struct RestoreJob {
    /// Policies as of the job's start.
    engine: Engine,
    partitions: Vec<(TopicPartition, u64)>,
    committed: Option<BTreeMap<TopicPartition, i64>>,
    restored: BTreeMap<TopicPartition, BTreeMap<String, ModelState>>,
    /// Changelog partitions not yet read to their end.
    open: BTreeSet<i32>,
    records: u64,
    started: Instant,
    last_progress: Instant,
    last_warning: Option<Instant>,
}

impl RestoreJob {
    /// The partitions restored, with the number of their assignment.
    pub fn partitions(&self) -> &[(TopicPartition, u64)] {
        &self.partitions
    }
}
