//! `driftwatch demo`: an in-process Kafka cluster (librdkafka's mock
//! cluster), the telemetry simulator producing to it, the real pipeline
//! consuming it, the stand-in coordinator answering its requests, and a
//! reader that prints every retrain request and every status as one JSON
//! line on stdout. The loop closes: a retrained model's new version is sent
//! healthy and goes quiet.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use crate::config::Config;
use crate::coordinate::{CoordinateCounts, CoordinateError, CoordinateOptions};
use crate::engine::state::ModelView;
use crate::model::{RetrainRequest, RetrainStatus};
use crate::service::{self, ServiceError};
use crate::simulate::{SimulateError, SimulateOptions, WireFormat};
use crate::simulator::SimulatorConfig;

/// The demo's policies and topics.
pub const DEMO_CONFIG: &str = include_str!("../config/demo.toml");
/// Partitions of the demo's metric topic.
const METRIC_PARTITIONS: i32 = 6;

/// Options of `driftwatch demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub simulator: SimulatorConfig,
    pub duration: Duration,
    /// Simulated ticks (one event per model) per wall-clock second.
    pub ticks_per_second: u32,
    pub http_listen: SocketAddr,
    /// Wall-clock time the stand-in coordinator takes to "retrain".
    pub coordinator_delay: Duration,
}

/// One line of the demo's output: a request driftwatch made, or a status
/// the coordinator answered it with.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Request(RetrainRequest),
    Status(RetrainStatus),
}

/// What a demo run saw on the request and status topics, and the state of
/// every model just before it stopped.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    pub requests: Vec<RetrainRequest>,
    pub statuses: Vec<RetrainStatus>,
    pub models: BTreeMap<String, ModelView>,
}

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("in-process kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("demo configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("writing to stdout: {0}")]
    Stdout(#[from] std::io::Error),
    #[error("simulator: {0}")]
    Simulator(#[from] SimulateError),
    #[error("coordinator: {0}")]
    Coordinator(#[from] CoordinateError),
}

/// Runs the demo until `duration` passes or `stop` completes; hands every
/// request and status to `on_line` as it appears, and returns them all.
pub async fn run(
    options: DemoOptions,
    stop: impl std::future::Future<Output = ()>,
    on_line: impl FnMut(&Line) -> std::io::Result<()> + Send + 'static,
) -> Result<DemoReport, DemoError> {
    let cluster = MockCluster::new(1)?;
    let mut config = Config::from_toml_str(DEMO_CONFIG)?;
    config.kafka.bootstrap_servers = cluster.bootstrap_servers();
    config.http.listen = options.http_listen;
    cluster.create_topic("model-metrics", METRIC_PARTITIONS, 1)?;
    cluster.create_topic(&config.kafka.output_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.dlq_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.changelog_topic, METRIC_PARTITIONS, 1)?;
    let status_topic = config
        .kafka
        .status_topic
        .clone()
        .unwrap_or_else(|| "retrain-status".to_owned());
    cluster.create_topic(&status_topic, 1, 1)?;
    tracing::info!(bootstrap = %config.kafka.bootstrap_servers, "in-process kafka cluster up");

    let running = service::start(config.clone()).await?;
    tracing::info!(http = %running.http_addr, "metrics at http://{}/metrics", running.http_addr);

    let stop_flag = Arc::new(AtomicBool::new(false));
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    let simulator = {
        let client = client.clone();
        let stop = Arc::clone(&stop_flag);
        let opts = options.clone();
        let status_topic = status_topic.clone();
        std::thread::spawn(move || simulate(&client, &opts, &status_topic, &stop))
    };
    let coordinator = {
        let client = client.clone();
        let stop = Arc::clone(&stop_flag);
        let coordinate = CoordinateOptions {
            requests_topic: config.kafka.output_topic.clone(),
            status_topic: status_topic.clone(),
            group_id: "driftwatch-demo-coordinator".to_owned(),
            request_format: config.output_format.clone(),
            status_format: config.status_format.clone(),
            delay: options.coordinator_delay,
            fail_every: None,
        };
        std::thread::spawn(move || crate::coordinate::run(&client, &coordinate, None, &stop))
    };
    let reader = {
        let stop = Arc::clone(&stop_flag);
        let topics = [config.kafka.output_topic.clone(), status_topic];
        std::thread::spawn(move || read_lines(&client, &topics, &stop, on_line))
    };

    let shared = running.shared.clone();
    let mut models = BTreeMap::new();
    let result = running
        .until(async {
            tokio::select! {
                _ = tokio::time::sleep(options.duration) => {}
                _ = stop => {}
            }
            let shell = shared.lock();
            for slot in shell.slots.values() {
                for lineage in slot.state.models.keys() {
                    if let Some(view) = shell.model_view(lineage.as_str()) {
                        models.insert(lineage.to_string(), view);
                    }
                }
            }
        })
        .await;
    stop_flag.store(true, Ordering::Relaxed);
    let produced = simulator.join().unwrap_or(Ok(0));
    let answered = coordinator
        .join()
        .unwrap_or(Ok(CoordinateCounts::default()));
    let report = reader.join().unwrap_or(Ok(DemoReport::default()));
    result?;
    let report = report.map(|r| DemoReport { models, ..r });
    tracing::info!(events = produced?, "simulator stopped");
    tracing::info!(requests = answered?.requests, "coordinator stopped");
    report
}

/// Produces the simulator's ticks at the configured pace until stopped,
/// following the coordinator's statuses.
fn simulate(
    client: &ClientConfig,
    options: &DemoOptions,
    status_topic: &str,
    stop: &AtomicBool,
) -> Result<u64, SimulateError> {
    let options = SimulateOptions {
        topic: "model-metrics".to_owned(),
        simulator: options.simulator,
        ticks_per_second: f64::from(options.ticks_per_second.max(1)),
        max_ticks: None,
        format: WireFormat::Json,
        status_topic: Some(status_topic.to_owned()),
    };
    crate::simulate::produce(client, &options, stop)
}

/// Reads the request and status topics from the beginning and hands every
/// record to `on_line`; after `stop`, drains what is left.
fn read_lines(
    client: &ClientConfig,
    topics: &[String; 2],
    stop: &AtomicBool,
    mut on_line: impl FnMut(&Line) -> std::io::Result<()>,
) -> Result<DemoReport, DemoError> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "driftwatch-demo-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut report = DemoReport::default();
    let mut idle_after_stop = 0;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let Some(payload) = msg.payload() else {
                    continue;
                };
                let line: Result<Line, _> = if msg.topic() == topics[0] {
                    serde_json::from_slice(payload).map(Line::Request)
                } else {
                    serde_json::from_slice(payload).map(Line::Status)
                };
                match line {
                    Ok(line) => {
                        on_line(&line)?;
                        match line {
                            Line::Request(r) => report.requests.push(r),
                            Line::Status(s) => report.statuses.push(s),
                        }
                    }
                    Err(e) => tracing::warn!(topic = msg.topic(), error = %e, "unreadable record"),
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "demo reader"),
            None if stop.load(Ordering::Relaxed) => {
                idle_after_stop += 1;
                if idle_after_stop >= 5 {
                    break;
                }
            }
            None => {}
        }
    }
    Ok(report)
}

/// Prints a request or status as one JSON line on stdout.
pub fn print_line(line: &Line) -> std::io::Result<()> {
    let text = match line {
        Line::Request(request) => serde_json::to_string(request),
        Line::Status(status) => serde_json::to_string(status),
    }
    .map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Prints a request as one JSON line on stdout.
pub fn print_request(request: &RetrainRequest) -> std::io::Result<()> {
    let line = serde_json::to_string(request).map_err(std::io::Error::other)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Requests per model, for the closing summary.
pub fn summarize(requests: &[RetrainRequest]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in requests {
        *counts.entry(r.model.lineage()).or_default() += 1;
    }
    counts
}
