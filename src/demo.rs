//! `driftwatch demo`: an in-process Kafka cluster (librdkafka's mock
//! cluster), the telemetry simulator producing to it, the real pipeline
//! consuming it, and a reader that prints every retrain request as one JSON
//! line on stdout.

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
use crate::model::RetrainRequest;
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
}

/// Runs the demo until `duration` passes or `stop` completes; returns the
/// requests seen on the output topic.
pub async fn run(
    options: DemoOptions,
    stop: impl std::future::Future<Output = ()>,
    mut on_request: impl FnMut(&RetrainRequest) -> std::io::Result<()> + Send + 'static,
) -> Result<Vec<RetrainRequest>, DemoError> {
    let cluster = MockCluster::new(1)?;
    let mut config = Config::from_toml_str(DEMO_CONFIG)?;
    config.kafka.bootstrap_servers = cluster.bootstrap_servers();
    config.http.listen = options.http_listen;
    cluster.create_topic("model-metrics", METRIC_PARTITIONS, 1)?;
    cluster.create_topic(&config.kafka.output_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.dlq_topic, 1, 1)?;
    cluster.create_topic(&config.kafka.changelog_topic, METRIC_PARTITIONS, 1)?;
    if let Some(status) = &config.kafka.status_topic {
        cluster.create_topic(status, 1, 1)?;
    }
    tracing::info!(bootstrap = %config.kafka.bootstrap_servers, "in-process kafka cluster up");

    let running = service::start(config.clone()).await?;
    tracing::info!(http = %running.http_addr, "metrics at http://{}/metrics", running.http_addr);

    let stop_flag = Arc::new(AtomicBool::new(false));
    let simulator = {
        let bootstrap = config.kafka.bootstrap_servers.clone();
        let stop = Arc::clone(&stop_flag);
        let opts = options.clone();
        std::thread::spawn(move || simulate(&bootstrap, &opts, &stop))
    };
    let reader = {
        let bootstrap = config.kafka.bootstrap_servers.clone();
        let topic = config.kafka.output_topic.clone();
        let stop = Arc::clone(&stop_flag);
        std::thread::spawn(move || read_requests(&bootstrap, &topic, &stop, &mut on_request))
    };

    let result = running
        .until(async {
            tokio::select! {
                _ = tokio::time::sleep(options.duration) => {}
                _ = stop => {}
            }
        })
        .await;
    stop_flag.store(true, Ordering::Relaxed);
    let produced = simulator.join().unwrap_or(Ok(0));
    let requests = reader.join().unwrap_or(Ok(Vec::new()));
    result?;
    tracing::info!(events = produced?, "simulator stopped");
    requests
}

/// Produces the simulator's ticks at the configured pace until stopped.
fn simulate(
    bootstrap: &str,
    options: &DemoOptions,
    stop: &AtomicBool,
) -> Result<u64, SimulateError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", bootstrap);
    let options = SimulateOptions {
        topic: "model-metrics".to_owned(),
        simulator: options.simulator,
        ticks_per_second: f64::from(options.ticks_per_second.max(1)),
        max_ticks: None,
        format: WireFormat::Json,
    };
    crate::simulate::produce(&client, &options, stop)
}

/// Reads the output topic from the beginning and hands every request to
/// `on_request`; after `stop`, drains what is left and returns them all.
fn read_requests(
    bootstrap: &str,
    topic: &str,
    stop: &AtomicBool,
    on_request: &mut dyn FnMut(&RetrainRequest) -> std::io::Result<()>,
) -> Result<Vec<RetrainRequest>, DemoError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "driftwatch-demo-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut requests = Vec::new();
    let mut idle_after_stop = 0;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                let Some(payload) = msg.payload() else {
                    continue;
                };
                match serde_json::from_slice::<RetrainRequest>(payload) {
                    Ok(request) => {
                        on_request(&request)?;
                        requests.push(request);
                    }
                    Err(e) => tracing::warn!(error = %e, "unreadable request on output topic"),
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "request reader"),
            None if stop.load(Ordering::Relaxed) => {
                idle_after_stop += 1;
                if idle_after_stop >= 5 {
                    break;
                }
            }
            None => {}
        }
    }
    Ok(requests)
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
