//! Helpers for integration tests. They run against a real broker named by
//! `DRIFTWATCH_TEST_BOOTSTRAP` (scripts/test.sh starts one), or else against
//! librdkafka's in-process mock cluster. Each test gets its own topics and
//! group ids, so tests can share one broker.
#![allow(dead_code)]

pub mod instance;
pub mod kafka_broker;
pub mod raw_log;
pub mod secure_broker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use driftwatch::codec::{schemas, Encoder};
use driftwatch::config::Config;
use driftwatch::model::{MetricEvent, RetrainRequest, RetrainStatus};
use driftwatch::service::{self, Running};
use driftwatch::simulator::{Simulator, SimulatorConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

pub const METRIC_PARTITIONS: i32 = 4;
pub const WAIT: Duration = Duration::from_secs(90);
/// Names a real broker to run against (e.g. `127.0.0.1:9092`); unset, tests
/// use librdkafka's in-process mock cluster.
pub const BOOTSTRAP_ENV: &str = "DRIFTWATCH_TEST_BOOTSTRAP";
/// Overrides the processing mode of the tests' instances (default:
/// exactly_once on a real broker, at_least_once on the mock cluster).
pub const PROCESSING_ENV: &str = "DRIFTWATCH_TEST_PROCESSING";
/// librdkafka debug contexts for the tests' instances (e.g. `eos,msg`).
pub const RDKAFKA_DEBUG_ENV: &str = "DRIFTWATCH_TEST_RDKAFKA_DEBUG";

/// A Kafka for one test: its own topics (unique names on a shared broker)
/// and, without a real broker, the mock cluster that serves them.
pub struct TestKafka {
    pub bootstrap: String,
    pub metrics: String,
    pub requests: String,
    pub status: String,
    pub dlq: String,
    pub changelog: String,
    suffix: String,
    /// True on a real broker (transactions work there).
    pub real: bool,
    _mock: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl TestKafka {
    /// A group id unique to this test run.
    pub fn group(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, AtomicOrdering::Relaxed)
    )
}

/// The real broker from [`BOOTSTRAP_ENV`], or a fresh mock cluster.
pub async fn kafka() -> TestKafka {
    match std::env::var(BOOTSTRAP_ENV) {
        Ok(bootstrap) if !bootstrap.is_empty() => real_kafka(&bootstrap).await,
        _ => mock_kafka(),
    }
}

/// The real broker; fails the test (never skips it) when none is named.
pub async fn real_broker() -> TestKafka {
    let bootstrap = std::env::var(BOOTSTRAP_ENV).unwrap_or_default();
    assert!(
        !bootstrap.is_empty(),
        "this test needs a real broker: run scripts/test.sh, or set {BOOTSTRAP_ENV}"
    );
    real_kafka(&bootstrap).await
}

fn topic_names(suffix: &str) -> [String; 5] {
    [
        format!("model-metrics-{suffix}"),
        format!("retrain-requests-{suffix}"),
        format!("retrain-status-{suffix}"),
        format!("driftwatch-dlq-{suffix}"),
        format!("driftwatch-changelog-{suffix}"),
    ]
}

fn mock_kafka() -> TestKafka {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let suffix = unique_suffix();
    let [metrics, requests, status, dlq, changelog] = topic_names(&suffix);
    cluster
        .create_topic(&metrics, METRIC_PARTITIONS, 1)
        .expect("topic");
    cluster.create_topic(&requests, 2, 1).expect("topic");
    cluster.create_topic(&status, 2, 1).expect("topic");
    cluster.create_topic(&dlq, 1, 1).expect("topic");
    // The mock cluster cannot create topics through the admin API.
    cluster
        .create_topic(&changelog, METRIC_PARTITIONS, 1)
        .expect("topic");
    TestKafka {
        bootstrap: cluster.bootstrap_servers(),
        metrics,
        requests,
        status,
        dlq,
        changelog,
        suffix,
        real: false,
        _mock: Some(cluster),
    }
}

/// Fresh topics on the broker at `bootstrap`.
pub async fn real_kafka(bootstrap: &str) -> TestKafka {
    let kafka = unprovisioned_kafka(bootstrap);
    create_topics(bootstrap, &kafka.topics_to_create()).await;
    kafka
}

/// Fresh topic names on a real broker at `bootstrap`, not yet created (see
/// [`TestKafka::topics_to_create`]).
pub fn unprovisioned_kafka(bootstrap: &str) -> TestKafka {
    let suffix = unique_suffix();
    let [metrics, requests, status, dlq, changelog] = topic_names(&suffix);
    TestKafka {
        bootstrap: bootstrap.to_owned(),
        metrics,
        requests,
        status,
        dlq,
        changelog,
        suffix,
        real: true,
        _mock: None,
    }
}

impl TestKafka {
    /// The topics a test creates, with their partitions. The changelog is
    /// left for driftwatch to create.
    pub fn topics_to_create(&self) -> [(&str, i32); 4] {
        [
            (&self.metrics, METRIC_PARTITIONS),
            (&self.requests, 2),
            (&self.status, 2),
            (&self.dlq, 1),
        ]
    }
}

/// Creates topics on a real broker.
pub async fn create_topics(bootstrap: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create topics")
    {
        result.expect("topic created");
    }
}

/// The policies of the demo, on this test's topics, reading JSON and
/// Confluent Avro (schema id 1).
pub fn config(kafka: &TestKafka, group: &str) -> Config {
    Config::from_toml_str(&config_toml(kafka, group)).expect("test config")
}

/// The TOML text behind [`config`].
pub fn config_toml(kafka: &TestKafka, group: &str) -> String {
    let set = |text: String, key: &str, old: &str, new: &str| {
        text.replace(&format!("{key} = {old}"), &format!("{key} = {new}"))
    };
    let mut toml = driftwatch::demo::DEMO_CONFIG.to_owned();
    toml = set(
        toml,
        "bootstrap_servers",
        "\"in-process\"",
        &format!("\"{}\"", kafka.bootstrap),
    );
    toml = set(
        toml,
        "group_id",
        "\"driftwatch-demo\"",
        &format!("\"{}\"", kafka.group(group)),
    );
    toml = set(
        toml,
        "input_topics",
        "[\"model-metrics\"]",
        &format!("[\"{}\"]", kafka.metrics),
    );
    toml = set(
        toml,
        "output_topic",
        "\"retrain-requests\"",
        &format!("\"{}\"", kafka.requests),
    );
    toml = set(
        toml,
        "status_topic",
        "\"retrain-status\"",
        &format!("\"{}\"", kafka.status),
    );
    toml = set(
        toml,
        "dlq_topic",
        "\"driftwatch-dlq\"",
        &format!("\"{}\"", kafka.dlq),
    );
    toml = set(
        toml,
        "changelog_topic",
        "\"driftwatch-demo-changelog\"",
        &format!("\"{}\"", kafka.changelog),
    );
    // Transactions need a real broker; every instance needs its own id.
    let processing = match std::env::var(PROCESSING_ENV) {
        Ok(p) if !p.is_empty() => p,
        _ if kafka.real => "exactly_once".to_owned(),
        _ => "at_least_once".to_owned(),
    };
    toml = set(
        toml,
        "processing",
        "\"at_least_once\"",
        &format!("\"{processing}\"\ninstance_id = \"{}\"", unique_suffix()),
    );
    toml = set(toml, "listen", "\"127.0.0.1:9464\"", "\"127.0.0.1:0\"");
    // librdkafka debug contexts for a failing run, e.g. "eos,protocol,msg"
    // (shown with RUST_LOG=librdkafka=debug).
    if let Ok(contexts) = std::env::var(RDKAFKA_DEBUG_ENV) {
        toml = toml.replace(
            "properties = { \"session.timeout.ms\" = \"6000\" }",
            &format!(
                "properties = {{ \"session.timeout.ms\" = \"6000\", debug = \"{contexts}\" }}"
            ),
        );
    }
    toml.replace(
        "[format]\nkind = \"json\"",
        "[format]\nkind = \"auto\"\nschemas = { \"1\" = \"schemas/metric_event.avsc\" }",
    )
}

/// Sets `key` (the first line that assigns it) to the TOML `value`.
pub fn set_key(toml: &str, key: &str, value: &str) -> String {
    let prefix = format!("{key} = ");
    let mut done = false;
    toml.lines()
        .map(|line| {
            if !done && line.starts_with(&prefix) {
                done = true;
                format!("{prefix}{value}")
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The binary the environment variable `var` names. Fails the test (it
/// never skips) when `var` is unset or names no file; `hint` says how to
/// get it.
pub fn bin_from_env(var: &str, hint: &str) -> std::path::PathBuf {
    let value = std::env::var_os(var).unwrap_or_default();
    assert!(!value.is_empty(), "this test needs {var}: {hint}");
    let path = std::path::PathBuf::from(value);
    assert!(
        path.is_file(),
        "{var} names {}, which is not a file",
        path.display()
    );
    path
}

/// A log file, opened for appending (kept across restarts of a process).
pub fn append_log(path: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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

/// The exactly-once property: no request id twice, and the requests are
/// the oracle's, field for field.
pub fn assert_exactly_once(output: Vec<RetrainRequest>, expected: &[RetrainRequest]) {
    let mut ids: Vec<&str> = output.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    let written = ids.len();
    ids.dedup();
    assert_eq!(written, ids.len(), "a request id appears twice");
    assert_eq!(sorted(output), expected);
}

pub fn sorted(mut requests: Vec<RetrainRequest>) -> Vec<RetrainRequest> {
    requests.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    requests
}

pub fn producer(kafka: &TestKafka) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
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

/// Produces `events` to the metric topic keyed by lineage: models whose
/// number is even as JSON, odd as Confluent Avro (schema id 1), unless
/// `only` forces one wire format.
pub async fn produce_events(
    kafka: &TestKafka,
    producer: &FutureProducer,
    events: &[MetricEvent],
    only: Option<Wire>,
) {
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
        let record = FutureRecord::to(&kafka.metrics).key(&key).payload(&payload);
        deliveries.push(enqueue(producer, record));
    }
    delivered(deliveries).await;
}

/// Produces JSON `events` keyed by lineage, all to `partition`, so that
/// they share one partition's watermark.
pub async fn produce_json_to_partition(
    kafka: &TestKafka,
    producer: &FutureProducer,
    events: &[MetricEvent],
    partition: i32,
) {
    let mut deliveries = Vec::with_capacity(events.len());
    for event in events {
        let payload = serde_json::to_vec(event).expect("json");
        let key = event.model.lineage();
        let record = FutureRecord::to(&kafka.metrics)
            .partition(partition)
            .key(&key)
            .payload(&payload);
        deliveries.push(enqueue(producer, record));
    }
    delivered(deliveries).await;
}

fn enqueue(producer: &FutureProducer, record: FutureRecord<'_, String, Vec<u8>>) -> DeliveryFuture {
    producer
        .send_result(record)
        .map_err(|(e, _)| e)
        .expect("enqueue")
}

/// Waits until every delivery is acknowledged.
async fn delivered(deliveries: Vec<DeliveryFuture>) {
    for delivery in deliveries {
        delivery.await.expect("delivery").expect("produced");
    }
}

/// Produces `events` as [`produce_events`] does, `batch` at a time with
/// `pause` in between, so that the stream flows while a test acts.
pub async fn produce_paced(
    kafka: &TestKafka,
    producer: &FutureProducer,
    events: &[MetricEvent],
    batch: usize,
    pause: Duration,
) {
    for chunk in events.chunks(batch.max(1)) {
        produce_events(kafka, producer, chunk, None).await;
        tokio::time::sleep(pause).await;
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

pub async fn produce_status(kafka: &TestKafka, producer: &FutureProducer, status: &RetrainStatus) {
    let payload = serde_json::to_vec(status).expect("json");
    produce_raw(
        producer,
        &kafka.status,
        Some(status.model.lineage().as_bytes()),
        Some(&payload),
    )
    .await;
}

/// Every committed record of `topic` from the beginning up to its current
/// end (read_committed: records of aborted transactions are not seen).
///
/// The end is where a fetch reports end-of-partition (for a read_committed
/// reader, the last stable offset), as restore finds it; on tansu this is
/// also the only exact end, its ListOffsets answering the last batch's base
/// offset + 1.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<OwnedMessage> {
    read_topic_with(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .clone(),
        topic,
    )
}

/// [`read_topic`] through a client built on `base` (bootstrap servers and
/// security already set).
pub fn read_topic_with(mut base: ClientConfig, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer<driftwatch::kafka::restore::EofExpected> = base
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create_with_context(driftwatch::kafka::restore::EofExpected)
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut at_end: HashMap<i32, bool> = HashMap::new();
    for p in metadata.topics()[0].partitions() {
        at_end.insert(p.id(), false);
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while at_end.values().any(|done| !done) {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                at_end.insert(msg.partition(), false);
                out.push(msg.detach());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// The next offset of each partition of `topic`: its record count.
pub fn end_offsets(bootstrap: &str, topic: &str) -> HashMap<i32, i64> {
    let mut ends = HashMap::new();
    for msg in read_topic(bootstrap, topic) {
        let end = ends.entry(msg.partition()).or_insert(0);
        *end = (*end).max(msg.offset() + 1);
    }
    ends
}

/// The retrain requests on the output topic, sorted by id, read with the
/// client's `isolation.level=read_committed` (see [`read_topic_with`]).
pub fn read_requests(kafka: &TestKafka) -> Vec<RetrainRequest> {
    sorted(
        read_topic(&kafka.bootstrap, &kafka.requests)
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
    let deadline = Instant::now() + WAIT;
    loop {
        let done = finished(instances);
        let settled = instances.iter().all(|r| r.shared.lock().settled());
        if done == records as u64 && settled {
            return;
        }
        if Instant::now() >= deadline {
            let slots: Vec<String> = instances
                .iter()
                .flat_map(|r| {
                    let shell = r.shared.lock();
                    shell
                        .slots
                        .iter()
                        .map(|(tp, s)| {
                            format!(
                                "{}/{}: phase={:?} next={:?} committed={:?}",
                                tp.0, tp.1, s.phase, s.processed_next, s.committed_next
                            )
                        })
                        .collect::<Vec<_>>()
                })
                .collect();
            panic!("timed out waiting for {records} records processed and settled: {done} processed, settled: {settled}; slots: {slots:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts an instance and waits until it has joined the group.
pub async fn start(config: Config) -> Running {
    if std::env::var_os("RUST_LOG").is_some() {
        driftwatch::telemetry::init_logging(driftwatch::telemetry::LogFormat::Text);
    }
    let running = service::start(config).await.expect("service starts");
    wait_until("group join", || running.shared.lock().assigned_once()).await;
    running
}

/// Stops an instance gracefully (commit, leave the group).
pub async fn stop(running: Running) {
    running.until(async {}).await.expect("clean shutdown");
}
