//! `driftwatch simulate`: the simulator's telemetry produced to any Kafka,
//! keyed by model lineage, as JSON or Avro in Confluent framing, at a given
//! pace. The demo uses it against its in-process cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::codec::{schemas, CodecError, Decoder, EncodeError, Encoder, FormatConfig};
use crate::model::{MetricEvent, RetrainStatus, StatusKind};
use crate::simulator::{Simulator, SimulatorConfig};

/// How the events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    Json,
    /// Avro in Confluent framing with this schema id (the id the
    /// consumers' registry or local schema map gives `metric_event.avsc`).
    ConfluentAvro {
        schema_id: u32,
    },
}

/// What to produce, where, how fast.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub topic: String,
    pub simulator: SimulatorConfig,
    /// Ticks (one event per model) per wall-clock second.
    pub ticks_per_second: f64,
    /// Stop after this many ticks (`None`: until stopped).
    pub max_ticks: Option<u64>,
    pub format: WireFormat,
    /// The coordinator's status topic to follow: after SUCCEEDED with a
    /// new version, the model sends that version, healthy.
    pub status_topic: Option<String>,
}

/// Why simulating stopped early.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("encoder: {0}")]
    Codec(#[from] CodecError),
    #[error("encoding an event: {0}")]
    Encode(#[from] EncodeError),
}

/// Produces ticks to `client` (a producer configuration: bootstrap servers,
/// security, any librdkafka property) until `stop` is set or `max_ticks`
/// have gone; returns the events produced, all delivered.
pub fn produce(
    client: &ClientConfig,
    options: &SimulateOptions,
    stop: &AtomicBool,
) -> Result<u64, SimulateError> {
    let mut config = client.clone();
    if config.get("linger.ms").is_none() {
        config.set("linger.ms", "5");
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create()?;
    let encoder = match options.format {
        WireFormat::Json => Encoder::<MetricEvent>::json(),
        WireFormat::ConfluentAvro { schema_id } => {
            Encoder::confluent(schema_id, schemas::METRIC_EVENT)?
        }
    };
    let mut sim = Simulator::new(options.simulator);
    let mut deployments = match &options.status_topic {
        Some(topic) => Some(Deployments::new(client, topic)?),
        None => None,
    };
    let interval = Duration::from_secs_f64(1.0 / options.ticks_per_second.max(0.001));
    let started = Instant::now();
    let mut ticks = 0u64;
    let mut produced = 0u64;
    while !stop.load(Ordering::Relaxed) && options.max_ticks.is_none_or(|max| ticks < max) {
        if let Some(deployments) = deployments.as_mut() {
            deployments.apply(&mut sim);
        }
        for event in sim.tick() {
            let key = event.model.lineage();
            let payload = encoder.encode(&event)?;
            // The simulated producer's clock is the simulated event time,
            // so the record's timestamp agrees with the event's (the
            // clock-skew guard compares the two).
            let record = BaseRecord::to(&options.topic)
                .key(&key)
                .payload(&payload)
                .timestamp(event.timestamp);
            send_when_queue_has_room(&producer, record)?;
            produced += 1;
        }
        ticks += 1;
        let due = started + interval.mul_f64(ticks as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(produced)
}

/// Sends `record`, waiting while the producer's queue is full.
pub fn send_when_queue_has_room(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, String, Vec<u8>>,
) -> Result<(), rdkafka::error::KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Follows the status topic from its end: each SUCCEEDED with a new version
/// deploys that version in the simulator.
struct Deployments {
    consumer: BaseConsumer,
    decoder: Decoder<RetrainStatus>,
    topic: String,
    assigned: bool,
}

impl Deployments {
    fn new(client: &ClientConfig, topic: &str) -> Result<Self, SimulateError> {
        let consumer: BaseConsumer = client
            .clone()
            .set("group.id", "driftwatch-simulator")
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(Deployments {
            consumer,
            decoder: Decoder::new(&FormatConfig::default(), schemas::RETRAIN_STATUS)?,
            topic: topic.to_owned(),
            assigned: false,
        })
    }

    /// Assigns every partition of the topic at its end, once it exists.
    fn assign(&mut self) {
        let Ok(metadata) = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(1))
        else {
            return;
        };
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return;
        };
        if topic.error().is_some() || topic.partitions().is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in topic.partitions() {
            if tpl
                .add_partition_offset(&self.topic, p.id(), Offset::End)
                .is_err()
            {
                return;
            }
        }
        self.assigned = self.consumer.assign(&tpl).is_ok();
        if self.assigned {
            tracing::info!(topic = %self.topic, "simulator follows the coordinator's statuses");
        }
    }

    /// Deploys the versions of every SUCCEEDED status that arrived.
    fn apply(&mut self, sim: &mut Simulator) {
        if !self.assigned {
            self.assign();
            return;
        }
        while let Some(result) = self.consumer.poll(Duration::ZERO) {
            let Ok(msg) = result else {
                return;
            };
            let Some(Ok(status)) = msg.payload().map(|p| self.decoder.decode(p)) else {
                continue;
            };
            if let (StatusKind::Succeeded, Some(version)) = (status.status, &status.new_version) {
                if sim.deploy(&status.model.lineage(), version) {
                    tracing::info!(model = %status.model.lineage(), version = %version, "simulator deploys the retrained version");
                }
            }
        }
    }
}
