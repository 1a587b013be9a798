//! `driftwatch coordinate`: a stand-in for the retrain coordinator, so that
//! the loop closes in the compose stack and in tests. It answers every
//! retrain request on the status topic: ACCEPTED and STARTED at once, then,
//! after a delay, SUCCEEDED with a new model version (or FAILED, for every
//! Nth request when asked to). It trains nothing.
//!
//! At-least-once: a request's offset is stored only after its final status
//! is acknowledged, so a restart answers the unfinished requests again
//! (driftwatch ignores statuses of requests no longer in flight).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use crate::codec::{schemas, CodecError, Decoder, EncodeError, Encoder, FormatConfig};
use crate::model::{ModelRef, RetrainRequest, RetrainStatus, StatusKind};

/// Where to read requests and answer, and how.
#[derive(Debug, Clone)]
pub struct CoordinateOptions {
    pub requests_topic: String,
    pub status_topic: String,
    /// The consumer group of the coordinator.
    pub group_id: String,
    /// How the requests are encoded (driftwatch's `output_format`).
    pub request_format: FormatConfig,
    /// How statuses are encoded (driftwatch's `status_format`; `auto` and
    /// `json` write JSON).
    pub status_format: FormatConfig,
    /// Time from a request to its final status.
    pub delay: Duration,
    /// Every Nth request fails (`None`: all succeed).
    pub fail_every: Option<u64>,
}

/// Why coordinating stopped.
#[derive(Debug, thiserror::Error)]
pub enum CoordinateError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    #[error("encoding a status: {0}")]
    Encode(#[from] EncodeError),
}

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoordinateCounts {
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Records on the requests topic that are not retrain requests.
    pub undecodable: u64,
}

/// The statuses a request gets, in order: ACCEPTED, STARTED, and the final
/// one. `sequence` counts requests from 1 (for `fail_every`).
pub fn answer(
    request: &RetrainRequest,
    sequence: u64,
    fail_every: Option<u64>,
    now_ms: i64,
    delay: Duration,
) -> [RetrainStatus; 3] {
    let status = |status: StatusKind, new_version: Option<String>, timestamp: i64| RetrainStatus {
        request_id: request.request_id.clone(),
        model: request.model.clone(),
        status,
        new_version,
        timestamp,
    };
    let fails = fail_every.is_some_and(|n| n > 0 && sequence % n == 0);
    let done_ms = now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
    let last = if fails {
        status(StatusKind::Failed, None, done_ms)
    } else {
        status(
            StatusKind::Succeeded,
            Some(next_version(&request.model)),
            done_ms,
        )
    };
    [
        status(StatusKind::Accepted, None, now_ms),
        status(StatusKind::Started, None, now_ms),
        last,
    ]
}

/// The version a successful retrain produces: a numeric version plus one,
/// otherwise the version with `-retrained`.
pub fn next_version(model: &ModelRef) -> String {
    match model.version.as_deref() {
        Some(v) => match v.parse::<u64>() {
            Ok(n) => n.saturating_add(1).to_string(),
            Err(_) => format!("{v}-retrained"),
        },
        None => "retrained".to_owned(),
    }
}

/// A final status waiting for its time, and the request it answers.
struct Pending {
    due: Instant,
    status: RetrainStatus,
    partition: i32,
    offset: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Answers requests until `stop` is set, or until `max_requests` have had
/// their final status (for tests). `client` carries the bootstrap servers,
/// security and properties.
pub fn run(
    client: &ClientConfig,
    options: &CoordinateOptions,
    max_requests: Option<u64>,
    stop: &AtomicBool,
) -> Result<CoordinateCounts, CoordinateError> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", &options.group_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .create()?;
    consumer.subscribe(&[options.requests_topic.as_str()])?;
    let producer: ThreadedProducer<DefaultProducerContext> = client
        .clone()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let decoder =
        Decoder::<RetrainRequest>::new(&options.request_format, schemas::RETRAIN_REQUEST)?;
    let encoder = Encoder::<RetrainStatus>::new(&options.status_format, schemas::RETRAIN_STATUS)?;
    let send = |status: &RetrainStatus| -> Result<(), CoordinateError> {
        let payload = encoder.encode(status)?;
        let key = status.model.lineage();
        let mut record = BaseRecord::to(&options.status_topic)
            .key(&key)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    back,
                )) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    };

    let mut counts = CoordinateCounts::default();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    while !stop.load(Ordering::Relaxed)
        && max_requests.is_none_or(|max| counts.succeeded + counts.failed < max)
    {
        if let Some(result) = consumer.poll(Duration::from_millis(100)) {
            let msg = result?;
            match msg.payload().map(|p| decoder.decode(p)) {
                Some(Ok(request)) => {
                    counts.requests += 1;
                    let [accepted, started, last] = answer(
                        &request,
                        counts.requests,
                        options.fail_every,
                        now_ms(),
                        options.delay,
                    );
                    send(&accepted)?;
                    send(&started)?;
                    tracing::info!(request = %request.request_id, model = %request.model.lineage(), action = ?request.action, "retrain request accepted");
                    pending.push_back(Pending {
                        due: Instant::now() + options.delay,
                        status: last,
                        partition: msg.partition(),
                        offset: msg.offset(),
                    });
                }
                other => {
                    counts.undecodable += 1;
                    let reason = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "empty payload".to_owned(),
                    };
                    tracing::warn!(partition = msg.partition(), offset = msg.offset(), %reason, "not a retrain request; skipped");
                    consumer.store_offset(msg.topic(), msg.partition(), msg.offset())?;
                }
            }
        }
        // The delay is the same for all, so the queue is in due order.
        let mut finished = Vec::new();
        while pending.front().is_some_and(|p| p.due <= Instant::now()) {
            if let Some(p) = pending.pop_front() {
                send(&p.status)?;
                match p.status.status {
                    StatusKind::Failed => counts.failed += 1,
                    _ => counts.succeeded += 1,
                }
                tracing::info!(request = %p.status.request_id, status = ?p.status.status, new_version = ?p.status.new_version, "retrain request finished");
                finished.push((p.partition, p.offset));
            }
        }
        if !finished.is_empty() {
            producer.flush(Duration::from_secs(30))?;
            for (partition, offset) in finished {
                consumer.store_offset(&options.requests_topic, partition, offset)?;
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .or_else(|e| match e {
            // Nothing stored yet.
            rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset) => Ok(()),
            e => Err(e),
        })?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Action;
    use std::collections::BTreeMap;

    fn request(version: Option<&str>) -> RetrainRequest {
        RetrainRequest {
            request_id: "r-1".to_owned(),
            model: ModelRef::new("fraud", "scorer", version),
            action: Action::FineTune,
            rule: "accuracy-drop".to_owned(),
            detector: "threshold".to_owned(),
            metric: "accuracy".to_owned(),
            observed: 0.7,
            threshold: 0.85,
            window_start: 0,
            window_end: 300_000,
            triggered_at: 300_000,
            reason: "accuracy below 0.85".to_owned(),
            evidence: BTreeMap::new(),
        }
    }

    #[test]
    fn a_request_is_accepted_started_then_succeeds_with_the_next_version() {
        let [a, s, last] = answer(&request(Some("3")), 1, None, 1_000, Duration::from_secs(30));
        assert_eq!(
            [a.status, s.status, last.status],
            [
                StatusKind::Accepted,
                StatusKind::Started,
                StatusKind::Succeeded
            ]
        );
        assert!([&a, &s, &last]
            .iter()
            .all(|st| st.request_id == "r-1" && st.model.lineage() == "fraud/scorer"));
        assert_eq!(last.new_version.as_deref(), Some("4"));
        assert_eq!((a.timestamp, last.timestamp), (1_000, 31_000));
    }

    #[test]
    fn every_nth_request_fails_without_a_version() {
        let outcome = |n| answer(&request(Some("3")), n, Some(3), 0, Duration::ZERO)[2].status;
        assert_eq!(
            (1..=6).map(outcome).collect::<Vec<_>>(),
            [
                StatusKind::Succeeded,
                StatusKind::Succeeded,
                StatusKind::Failed,
                StatusKind::Succeeded,
                StatusKind::Succeeded,
                StatusKind::Failed
            ]
        );
        assert_eq!(
            answer(&request(None), 3, Some(3), 0, Duration::ZERO)[2].new_version,
            None
        );
    }

    #[test]
    fn versions_advance_numerically_or_by_suffix() {
        let version = |v: Option<&str>| next_version(&ModelRef::new("p", "m", v));
        assert_eq!(version(Some("41")), "42");
        assert_eq!(version(Some("v1.2")), "v1.2-retrained");
        assert_eq!(version(None), "retrained");
    }
}
