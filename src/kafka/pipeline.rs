//! The consumer loop: restore, poll, decode, apply, produce, commit.
//!
//! Runs on a dedicated thread with a `BaseConsumer`, so that rebalance
//! callbacks run synchronously inside `poll` and never race the loop. Every
//! `commit_interval` the work since the last commit becomes durable at once
//! (see [`super::outputs`]): exactly-once in one transaction, or
//! at-least-once with offsets stored only after outputs and snapshots are
//! acknowledged. Request ids are deterministic either way.

use std::collections::BTreeMap;

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
use super::outputs::{CommitFailure, Outputs};
use super::phase::{Phase, Transition};
use super::readiness::Readiness;
use super::restore::{RestoreJob, Restored, Restorer};
use super::shell::{lock, Shell, TopicPartition};
use super::step::{Record, Step};
use super::{admin, client, PipelineError};
use crate::codec::{schemas, Decoder};
use crate::config::{Config, InputTopics, Processing};
use crate::engine::StatusOutcome;
use crate::model::RetrainStatus;
use crate::telemetry::Metrics;

pub use super::outputs::dlq_headers;

const POLL_TIMEOUT: Duration = Duration::from_millis(50);
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(30);

/// What the rest of the process shares with the pipeline.
#[derive(Clone)]
pub struct Shared {
    pub shell: Arc<Mutex<Shell>>,
    /// The shell's readiness, readable without its lock.
    pub readiness: Arc<Readiness>,
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
            readiness: shell.readiness(),
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

/// Polls a batch: waits up to `wait` for the first record, then takes
/// whatever is already fetched, up to [`MAX_BATCH`]. Rebalance callbacks
/// run inside these polls, between records.
fn poll_batch(
    consumer: &BaseConsumer<PipelineContext>,
    wait: Duration,
) -> Vec<BorrowedMessage<'_>> {
    let mut batch = Vec::new();
    let mut timeout = wait;
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

/// The step's view of a polled message.
fn record<'m>(msg: &'m BorrowedMessage<'_>) -> Record<'m> {
    Record {
        topic: msg.topic(),
        partition: msg.partition(),
        offset: msg.offset(),
        key: msg.key(),
        payload: msg.payload(),
        timestamp: msg.timestamp().to_millis(),
    }
}

/// One chunk through the step: decoded outside the shell's lock, applied
/// under one lock, its outputs handed to the producer.
fn process_chunk(
    step: &mut Step<'_>,
    shared: &Shared,
    outputs: &Outputs,
    chunk: &[BorrowedMessage<'_>],
) -> Result<(), PipelineError> {
    let records: Vec<Record<'_>> = chunk.iter().map(record).collect();
    let verdicts = step.decode_all(&records)?;
    let mut shell = shared.lock();
    step.apply(&mut shell, &records, &verdicts);
    outputs.send_outbox(&mut shell)
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

/// Time given to a restore in each turn of the loop: the running
/// partitions are processed, and the group polled, between slices.
const RESTORE_SLICE: Duration = Duration::from_millis(100);

/// Restores newly assigned partitions a slice at a time, one job at a
/// time: partitions assigned while a job runs wait for the next.
struct Restores {
    restorer: Restorer,
    processing: Processing,
    job: Option<RestoreJob>,
}

impl Restores {
    /// True while a restore is under way.
    fn busy(&self) -> bool {
        self.job.is_some()
    }

    /// One turn's worth: starts a job for the partitions restoring if none
    /// runs, advances it by a slice, and installs what it restored when it
    /// is done. A job whose partitions were all revoked or assigned anew
    /// meanwhile is dropped.
    fn turn(
        &mut self,
        shared: &Shared,
        consumer: &BaseConsumer<PipelineContext>,
    ) -> Result<(), PipelineError> {
        let mut job = match self.job.take() {
            Some(job) => job,
            None => match self.start(shared, consumer)? {
                Some(job) => job,
                None => return Ok(()),
            },
        };
        let wanted = {
            let shell = shared.lock();
            job.partitions()
                .iter()
                .any(|(tp, assignment)| shell.awaits_restore(tp, *assignment))
        };
        if !wanted {
            return self.restorer.cancel(job);
        }
        if !self
            .restorer
            .advance(&mut job, RESTORE_SLICE, &shared.metrics)?
        {
            self.job = Some(job);
            return Ok(());
        }
        let restored = self.restorer.finish(job, &shared.metrics)?;
        install(shared, consumer, restored)
    }

    fn start(
        &self,
        shared: &Shared,
        consumer: &BaseConsumer<PipelineContext>,
    ) -> Result<Option<RestoreJob>, PipelineError> {
        let (todo, engine) = {
            let shell = shared.lock();
            (shell.restoring(), shell.engine.clone())
        };
        if todo.is_empty() {
            return Ok(None);
        }
        let committed = match self.processing {
            Processing::ExactlyOnce => {
                let tps: Vec<TopicPartition> = todo.iter().map(|(tp, _)| tp.clone()).collect();
                Some(committed_offsets(consumer, &tps)?)
            }
            Processing::AtLeastOnce => None,
        };
        tracing::info!(
            partitions = todo.len(),
            "restoring state from the changelog"
        );
        self.restorer.start(engine, todo, committed).map(Some)
    }
}

/// Installs restored state into the slots still waiting for it, then
/// resumes their partitions (from the first record set aside meanwhile).
fn install(
    shared: &Shared,
    consumer: &BaseConsumer<PipelineContext>,
    restored: Restored,
) -> Result<(), PipelineError> {
    for (tp, assignment, models) in restored {
        let mut split = Vec::new();
        let installed = {
            let mut shell = shared.lock();
            let installed = shell.install_restored(&tp, assignment, models, &mut split);
            shell.publish_gauges(&shared.metrics);
            installed
        };
        for (lineage, other) in split {
            shared.metrics.model_split.inc();
            tracing::warn!(model = %lineage, partition = tp.1, other_partition = other.1, "model restored on two partitions");
        }
        let Some(refetch_from) = installed else {
            continue; // revoked or assigned anew meanwhile: restored again
        };
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
        shell.reassign_all();
        shell.transition(Transition::Rewound);
        for (topic, partition) in shell.slots.keys() {
            tpl.add_partition(topic, *partition);
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
    let mut restores = Restores {
        restorer: Restorer::new(config)?,
        processing: config.kafka.processing,
        job: None,
    };
    let mut statuses = match &config.kafka.status_topic {
        Some(topic) => Some(StatusFeed::new(config, topic)?),
        None => None,
    };
    let mut step = Step::new(config, &shared.metrics);
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
            let phase = shared.lock().phase();
            match phase {
                Phase::Failed => {
                    return Err(PipelineError::Delivery {
                        topic: "outputs".into(),
                        error: "outputs could not be made durable".into(),
                    })
                }
                Phase::Rewinding => rewind(shared, &consumer)?,
                Phase::Idle | Phase::InTransaction => {}
            }
            restores.turn(shared, &consumer)?;
            // While restoring, the restore's slice is the loop's wait.
            let wait = if restores.busy() {
                Duration::ZERO
            } else {
                POLL_TIMEOUT
            };
            let batch = poll_batch(&consumer, wait);
            let processed = batch
                .chunks(DECODE_CHUNK)
                .try_for_each(|chunk| process_chunk(&mut step, shared, &outputs, chunk));
            if let Err(e) = processed {
                shared.lock().transition(Transition::Fail);
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
        shared.lock().transition(Transition::Fail);
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
    let had_work = {
        let shell = shared.lock();
        shell.publish_gauges(&shared.metrics);
        !shell.settled()
    };
    match outputs.commit(&shared.shell, consumer, sync) {
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
