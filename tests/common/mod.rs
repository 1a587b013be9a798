//! Helpers for integration tests against librdkafka's in-process mock
//! cluster: topics, a test configuration, producing events, reading topics
//! back, and waiting on the service's own counters.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use driftwatch::codec::{schemas, Encoder};
use driftwatch::config::Config;
use driftwatch::model::{MetricEvent, RetrainRequest, RetrainStatus};
use driftwatch::service::{self, Running};
use driftwatch::simulator::{Simulator, SimulatorConfig};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

pub const METRICS: &str = "model-metrics";
pub const REQUESTS: &str = "retrain-requests";
pub const STATUS: &str = "retrain-status";
pub const DLQ: &str = "driftwatch-dlq";
pub const METRIC_PARTITIONS: i32 = 4;
pub const WAIT: Duration = Duration::from_secs(60);

/// A mock cluster with the service's topics.
pub fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(METRICS, METRIC_PARTITIONS, 1)
        .expect("topic");
    cluster.create_topic(REQUESTS, 2, 1).expect("topic");
    cluster.create_topic(STATUS, 2, 1).expect("topic");
    cluster.create_topic(DLQ, 1, 1).expect("topic");
    cluster
}

/// The policies of the demo, reading JSON and Confluent Avro (schema id 1).
pub fn config(bootstrap: &str, group: &str) -> Config {
    Config::from_toml_str(&config_toml(bootstrap, group)).expect("test config")
}

/// The TOML text behind [`config`].
pub fn config_toml(bootstrap: &str, group: &str) -> String {
    driftwatch::demo::DEMO_CONFIG
        .replace(
            "bootstrap_servers = \"in-process\"",
            &format!("bootstrap_servers = \"{bootstrap}\""),
        )
        .replace(
            "group_id = \"driftwatch-demo\"",
            &format!("group_id = \"{group}\""),
        )
        .replace("listen = \"127.0.0.1:9464\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "[format]\nkind = \"json\"",
            "[format]\nkind = \"auto\"\nschemas = { \"1\" = \"schemas/metric_event.avsc\" }",
        )
}

/// A deterministic stream: `ticks` events for each of `models` models, of
/// which `drifting` degrade.
pub fn simulated(models: usize, drifting: usize, ticks: usize, seed: u64) -> Vec<MetricEvent> {
    let mut sim = Simulator::new(SimulatorConfig {
        models,
        drifting,
        seed,
        ..SimulatorConfig::default()
    });
    (0..ticks).flat_map(|_| sim.tick()).collect()
}

/// The requests the engine produces for `events` offline: the oracle.
pub fn oracle(config: &Config, events: &[MetricEvent]) -> Vec<RetrainRequest> {
    let report = driftwatch::replay::replay(&service::engine_for(config), events.iter().cloned());
    sorted(report.requests)
}

pub fn sorted(mut requests: Vec<RetrainRequest>) -> Vec<RetrainRequest> {
    requests.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    requests
}

pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer")
}

/// Wire encodings the tests use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Json,
    ConfluentAvro,
}

/// Produces `events` keyed by lineage: models with an even index in the
/// model name's number as JSON, odd as Confluent Avro (schema id 1), unless
/// `only` forces one wire format.
pub async fn produce_events(producer: &FutureProducer, events: &[MetricEvent], only: Option<Wire>) {
    let json = Encoder::<MetricEvent>::json();
    let avro = Encoder::<MetricEvent>::confluent(1, schemas::METRIC_EVENT).expect("encoder");
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let wire = only.unwrap_or_else(|| {
            let digits: String = event
                .model
                .name
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            if digits.parse::<u32>().unwrap_or(0) % 2 == 0 {
                Wire::Json
            } else {
                Wire::ConfluentAvro
            }
        });
        let payload = match wire {
            Wire::Json => json.encode(event),
            Wire::ConfluentAvro => avro.encode(event),
        }
        .expect("encode");
        let key = event.model.lineage();
        let record = FutureRecord::to(METRICS).key(&key).payload(&payload);
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for delivery in deliveries {
        delivery.await.expect("delivery").expect("produced");
    }
}

/// Produces one raw record and waits for its acknowledgement.
pub async fn produce_raw(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("produce");
}

pub async fn produce_status(producer: &FutureProducer, status: &RetrainStatus) {
    let payload = serde_json::to_vec(status).expect("json");
    produce_raw(
        producer,
        STATUS,
        Some(status.model.lineage().as_bytes()),
        Some(&payload),
    )
    .await;
}

/// Every record of `topic` from the beginning up to its current end.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .expect("watermarks");
        if high > 0 {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .expect("tpl");
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + WAIT;
    let mut done: HashMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
            if msg.offset() + 1 >= ends[&msg.partition()] {
                done.insert(msg.partition(), true);
            }
            out.push(msg.detach());
        }
    }
    out
}

/// The retrain requests on the output topic, sorted by id.
pub fn read_requests(bootstrap: &str) -> Vec<RetrainRequest> {
    sorted(
        read_topic(bootstrap, REQUESTS)
            .iter()
            .map(|m| serde_json::from_slice(m.payload().expect("payload")).expect("request json"))
            .collect(),
    )
}

/// A header's value as text.
pub fn header(msg: &OwnedMessage, name: &str) -> Option<String> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Sum of a counter family over all label values.
pub fn counter(running: &Running, name: &str) -> u64 {
    running
        .shared
        .metrics
        .registry
        .gather()
        .iter()
        .filter(|f| f.name() == format!("driftwatch_{name}"))
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum()
}

/// Waits until `check` holds, polling; panics with `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Records the instances have finished with (applied, dead-lettered or skipped).
pub fn finished(instances: &[&Running]) -> u64 {
    instances
        .iter()
        .map(|r| {
            counter(r, "records_applied_total")
                + counter(r, "records_dead_lettered_total")
                + counter(r, "records_skipped_total")
        })
        .sum()
}

/// Waits until the instances together finished `records` records and every
/// output they caused is acknowledged (offsets stored).
pub async fn wait_processed(instances: &[&Running], records: usize) {
    wait_until(&format!("{records} records processed and settled"), || {
        finished(instances) == records as u64 && instances.iter().all(|r| r.shared.lock().settled())
    })
    .await;
}

/// Starts an instance and waits until it has joined the group.
pub async fn start(config: Config) -> Running {
    let running = service::start(config).await.expect("service starts");
    wait_until("group join", || running.shared.lock().assigned_once).await;
    running
}

/// Stops an instance gracefully (commit, leave the group).
pub async fn stop(running: Running) {
    running.until(async {}).await.expect("clean shutdown");
}
