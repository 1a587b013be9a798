//! `driftwatch bench`: the real pipeline's throughput as a ratio to a bare
//! rdkafka consumer reading the same topic in the same run.
//!
//! One run: a topic is created (on the in-process cluster, or any broker),
//! N simulated events for M models are produced to it (JSON or Confluent
//! Avro), a bare consumer reads them all (no decoding, no state), then for
//! each processing mode `driftwatch run` itself, as a child process with its
//! own group, changelog and outputs, processes them. The child's own
//! `/metrics` tell when every record is accounted for and committed; its
//! resident memory comes from `/proc`. Machines are shared and noisy, so
//! the figure that matters is the ratio, measured minutes apart at most.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use crate::codec::{schemas, CodecError, EncodeError, Encoder};
use crate::config::Processing;
use crate::model::MetricEvent;
use crate::simulate::{send_when_queue_has_room, WireFormat};
use crate::simulator::{Simulator, SimulatorConfig};

/// What the bench puts on one partition of the in-process cluster, below
/// the 5 MB its mock broker keeps (older record batches are deleted).
const MOCK_PARTITION_BUDGET_BYTES: u64 = 4 * 1024 * 1024;
/// The Confluent schema id the bench writes and maps to `metric_event.avsc`.
const BENCH_SCHEMA_ID: u32 = 1;
/// How often the child's `/metrics` is read while it works.
const PROGRESS_POLL: Duration = Duration::from_millis(20);
/// A phase that makes no progress for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `None`: an in-process cluster (librdkafka's mock broker).
    pub bootstrap_servers: Option<String>,
    pub models: usize,
    pub events: u64,
    pub partitions: i32,
    pub format: WireFormat,
    pub modes: Vec<Processing>,
    /// The configuration the pipeline runs with (its policies and engine
    /// limits); the bench replaces its `[kafka]` topics, group and
    /// bootstrap servers, and `[http]`.
    pub config_toml: String,
    /// The `driftwatch` executable to run as the pipeline.
    pub executable: PathBuf,
}

/// Why the bench could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("encoder: {0}")]
    Codec(#[from] CodecError),
    #[error("encoding an event: {0}")]
    Encode(#[from] EncodeError),
    #[error("configuration for the pipeline: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{phase}: no progress for {seconds} s ({detail})")]
    Stalled {
        phase: &'static str,
        seconds: u64,
        detail: String,
    },
    #[error("the pipeline exited early: {0}")]
    PipelineExited(std::process::ExitStatus),
}

/// The bare consumer's figures.
#[derive(Debug, Clone, Copy)]
pub struct BareFigures {
    pub events: u64,
    pub seconds: f64,
    pub bytes: u64,
}

impl BareFigures {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// The pipeline's figures in one processing mode.
#[derive(Debug, Clone)]
pub struct PipelineFigures {
    pub processing: Processing,
    /// From the first record consumed to the last one accounted for
    /// (applied, skipped or dead-lettered).
    pub processed_seconds: f64,
    /// From the first record consumed to the commit that made the last
    /// one durable.
    pub durable_seconds: f64,
    pub applied: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub requests: u64,
    pub models: u64,
    /// Resident memory once started, before the first record.
    pub rss_idle_bytes: u64,
    /// Resident memory after the last record.
    pub rss_end_bytes: u64,
    pub metrics_bytes: usize,
    pub snapshots: u64,
    pub snapshot_bytes: u64,
}

impl PipelineFigures {
    pub fn events_per_second(&self, events: u64) -> f64 {
        events as f64 / self.durable_seconds.max(1e-9)
    }

    /// Resident memory the models added, per model.
    pub fn bytes_per_model(&self) -> f64 {
        self.rss_end_bytes.saturating_sub(self.rss_idle_bytes) as f64 / self.models.max(1) as f64
    }

    pub fn snapshot_bytes_per_model(&self) -> f64 {
        self.snapshot_bytes as f64 / self.snapshots.max(1) as f64
    }
}

/// One mode's result beside the bare consumer run just before it.
#[derive(Debug, Clone)]
pub struct ModeResult {
    pub bare: BareFigures,
    pub pipeline: PipelineFigures,
}

impl ModeResult {
    /// Pipeline events/s over bare consumer events/s.
    pub fn ratio(&self) -> f64 {
        self.pipeline.events_per_second(self.bare.events) / self.bare.events_per_second()
    }
}

/// Where the topics live.
enum Broker {
    InProcess(MockCluster<'static, DefaultProducerContext>),
    External(String),
}

impl Broker {
    fn bootstrap(&self) -> String {
        match self {
            Broker::InProcess(cluster) => cluster.bootstrap_servers(),
            Broker::External(servers) => servers.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Broker::InProcess(_) => "in-process (librdkafka mock cluster)".to_owned(),
            Broker::External(servers) => servers.clone(),
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BenchError> {
        match self {
            Broker::InProcess(cluster) => Ok(cluster.create_topic(name, partitions, 1)?),
            Broker::External(servers) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", servers)
                    .create()?;
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                let results = futures::executor::block_on(
                    admin.create_topics([&topic], &AdminOptions::new()),
                )?;
                for result in results {
                    match result {
                        Ok(_) => {}
                        Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((topic, code)) => {
                            return Err(KafkaError::AdminOp(code)).map_err(|e| {
                                BenchError::Config(format!("creating topic {topic}: {e}"))
                            })
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Runs the whole bench, printing each figure as it is measured.
pub fn run(
    options: &BenchOptions,
    out: &mut impl std::io::Write,
) -> Result<Vec<ModeResult>, BenchError> {
    let broker = match &options.bootstrap_servers {
        Some(servers) => Broker::External(servers.clone()),
        None => Broker::InProcess(MockCluster::new(1)?),
    };
    let run_id = format!("{}-{}", std::process::id(), unix_millis());
    let topic = format!("bench-metrics-{run_id}");
    let mut options = options.clone();
    if let Broker::InProcess(_) = broker {
        // The mock broker keeps only the newest 5 MB of each partition:
        // spread the backlog so that none of it is dropped unread.
        let needed = (sample_record_bytes(&options)? * options.events)
            .div_ceil(MOCK_PARTITION_BUDGET_BYTES) as i32;
        if needed > options.partitions {
            writeln!(
                out,
                "in-process cluster: {needed} partitions (its broker keeps 5 MB per partition)"
            )?;
            options.partitions = needed;
        }
    }
    let options = &options;
    broker.create_topic(&topic, options.partitions)?;
    writeln!(
        out,
        "driftwatch bench: {} events for {} models, {}, {} partitions, broker {}",
        options.events,
        options.models,
        format_name(options.format),
        options.partitions,
        broker.describe()
    )?;
    let started = Instant::now();
    let produced = produce(&broker.bootstrap(), &topic, options)?;
    writeln!(
        out,
        "produced {produced} events in {:.1} s",
        started.elapsed().as_secs_f64()
    )?;

    let mut results = Vec::new();
    for (i, &mode) in options.modes.iter().enumerate() {
        let bare = bare_consumer(&broker.bootstrap(), &topic, options.events, mode)?;
        writeln!(
            out,
            "bare consumer ({}): {:.0} events/s ({:.2} s)",
            mode_name(mode),
            bare.events_per_second(),
            bare.seconds
        )?;
        let names = RunTopics::new(&run_id, i, mode);
        for t in names.all() {
            broker.create_topic(
                t,
                if t == names.changelog.as_str() {
                    options.partitions
                } else {
                    1
                },
            )?;
        }
        let pipeline = run_pipeline(&broker.bootstrap(), &topic, &names, mode, options)?;
        let result = ModeResult { bare, pipeline };
        let p = &result.pipeline;
        writeln!(
            out,
            "driftwatch run ({}): {:.0} events/s ({:.2} s; all processed at {:.2} s)  ratio to bare consumer {:.2}",
            mode_name(mode),
            p.events_per_second(options.events),
            p.durable_seconds,
            p.processed_seconds,
            result.ratio()
        )?;
        writeln!(
            out,
            "  applied {} skipped {} dead-lettered {} requests {}; models {}; rss {:.1} MiB (idle {:.1} MiB, {:.0} B/model); snapshots {} at {:.0} B each; /metrics {} bytes",
            p.applied,
            p.skipped,
            p.dead_lettered,
            p.requests,
            p.models,
            p.rss_end_bytes as f64 / 1_048_576.0,
            p.rss_idle_bytes as f64 / 1_048_576.0,
            p.bytes_per_model(),
            p.snapshots,
            p.snapshot_bytes_per_model(),
            p.metrics_bytes
        )?;
        results.push(result);
    }
    Ok(results)
}

fn format_name(format: WireFormat) -> &'static str {
    match format {
        WireFormat::Json => "json",
        WireFormat::ConfluentAvro { .. } => "confluent_avro",
    }
}

fn mode_name(mode: Processing) -> &'static str {
    match mode {
        Processing::ExactlyOnce => "exactly_once",
        Processing::AtLeastOnce => "at_least_once",
    }
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The size of one record (key, value and framing) the bench produces.
fn sample_record_bytes(options: &BenchOptions) -> Result<u64, BenchError> {
    let encoder = match options.format {
        WireFormat::Json => Encoder::<MetricEvent>::json(),
        WireFormat::ConfluentAvro { schema_id } => {
            Encoder::confluent(schema_id, schemas::METRIC_EVENT)?
        }
    };
    let mut sim = Simulator::new(SimulatorConfig {
        models: 1,
        ..SimulatorConfig::default()
    });
    let event = sim.tick().remove(0);
    let framing = 70;
    Ok((encoder.encode(&event)?.len() + event.model.lineage().len() + framing) as u64)
}

/// Produces `options.events` simulated events: one per model per tick,
/// keyed by lineage, each record's timestamp its event time.
fn produce(bootstrap: &str, topic: &str, options: &BenchOptions) -> Result<u64, BenchError> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()?;
    let encoder = match options.format {
        WireFormat::Json => Encoder::<MetricEvent>::json(),
        WireFormat::ConfluentAvro { schema_id } => {
            Encoder::confluent(schema_id, schemas::METRIC_EVENT)?
        }
    };
    let mut sim = Simulator::new(SimulatorConfig {
        models: options.models.max(1),
        drifting: (options.models / 100).max(1),
        ..SimulatorConfig::default()
    });
    let mut produced = 0u64;
    'ticks: loop {
        for event in sim.tick() {
            if produced >= options.events {
                break 'ticks;
            }
            let key = event.model.lineage();
            let payload = encoder.encode(&event)?;
            let record = BaseRecord::to(topic)
                .key(&key)
                .payload(&payload)
                .timestamp(event.timestamp);
            send_when_queue_has_room(&producer, record)?;
            produced += 1;
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(produced)
}

/// Reads every partition of `topic` from the beginning with a plain
/// consumer (the pipeline's fetch settings, no group, no decoding) until
/// `events` records arrived.
fn bare_consumer(
    bootstrap: &str,
    topic: &str,
    events: u64,
    mode: Processing,
) -> Result<BareFigures, BenchError> {
    let isolation = match mode {
        Processing::ExactlyOnce => "read_committed",
        Processing::AtLeastOnce => "read_uncommitted",
    };
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-bare-{}", unix_millis()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .create()?;
    assign_from_beginning(&consumer, topic)?;
    let mut seen = 0u64;
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    let mut last_progress = Instant::now();
    while seen < events {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                first.get_or_insert_with(Instant::now);
                seen += 1;
                bytes += msg.payload_len() as u64;
                last_progress = Instant::now();
            }
            Some(Err(e)) => tracing::warn!(error = %e, "bare consumer"),
            None if last_progress.elapsed() > STALL_TIMEOUT => {
                return Err(BenchError::Stalled {
                    phase: "bare consumer",
                    seconds: STALL_TIMEOUT.as_secs(),
                    detail: format!("{seen} of {events} records read"),
                })
            }
            None => {}
        }
    }
    let seconds = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    Ok(BareFigures {
        events: seen,
        seconds,
        bytes,
    })
}

/// Assigns every partition of `topic` from its beginning; returns how many.
fn assign_from_beginning(consumer: &BaseConsumer, topic: &str) -> Result<usize, BenchError> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    Ok(tpl.count())
}

/// The topics and group of one pipeline run, unique to it.
struct RunTopics {
    group: String,
    output: String,
    status: String,
    dlq: String,
    changelog: String,
}

impl RunTopics {
    fn new(run_id: &str, index: usize, mode: Processing) -> Self {
        let tag = format!("{run_id}-{index}-{}", mode_name(mode));
        RunTopics {
            group: format!("bench-group-{tag}"),
            output: format!("bench-requests-{tag}"),
            status: format!("bench-status-{tag}"),
            dlq: format!("bench-dlq-{tag}"),
            changelog: format!("bench-changelog-{tag}"),
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.output, &self.status, &self.dlq, &self.changelog]
    }
}

/// The configuration file of one pipeline run: the given policies and
/// engine limits, with this run's topics, group and HTTP address.
fn pipeline_config(
    bootstrap: &str,
    topic: &str,
    names: &RunTopics,
    mode: Processing,
    http: &str,
    options: &BenchOptions,
    dir: &std::path::Path,
) -> Result<PathBuf, BenchError> {
    let mut doc: toml::Table = options
        .config_toml
        .parse()
        .map_err(|e: toml::de::Error| BenchError::Config(e.to_string()))?;
    let kafka = doc
        .entry("kafka")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(kafka) = kafka else {
        return Err(BenchError::Config("[kafka] is not a table".into()));
    };
    let set = |t: &mut toml::Table, k: &str, v: &str| {
        t.insert(k.to_owned(), toml::Value::String(v.to_owned()));
    };
    set(kafka, "bootstrap_servers", bootstrap);
    set(kafka, "group_id", &names.group);
    kafka.remove("input_pattern");
    kafka.insert(
        "input_topics".into(),
        toml::Value::Array(vec![toml::Value::String(topic.to_owned())]),
    );
    set(kafka, "output_topic", &names.output);
    set(kafka, "status_topic", &names.status);
    set(kafka, "dlq_topic", &names.dlq);
    set(kafka, "changelog_topic", &names.changelog);
    set(kafka, "processing", mode_name(mode));
    kafka.insert("create_topics".into(), toml::Value::Boolean(false));
    let mut properties = match kafka.remove("properties") {
        Some(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    properties
        .entry("session.timeout.ms")
        .or_insert_with(|| toml::Value::String("6000".into()));
    kafka.insert("properties".into(), toml::Value::Table(properties));

    let mut http_table = toml::Table::new();
    set(&mut http_table, "listen", http);
    doc.insert("http".into(), toml::Value::Table(http_table));

    // Room for every model: the bench measures processing, not eviction.
    let per_partition = (options.models / options.partitions.max(1) as usize) * 2 + 1_000;
    let engine = doc
        .entry("engine")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(engine) = engine {
        let current = engine
            .get("max_models_per_partition")
            .and_then(toml::Value::as_integer)
            .unwrap_or(0);
        engine.insert(
            "max_models_per_partition".into(),
            toml::Value::Integer(current.max(per_partition as i64)),
        );
    }

    if let WireFormat::ConfluentAvro { schema_id } = options.format {
        let schema_path = dir.join("metric_event.avsc");
        std::fs::write(&schema_path, schemas::METRIC_EVENT)?;
        let mut map = toml::Table::new();
        set(
            &mut map,
            &schema_id.to_string(),
            &schema_path.display().to_string(),
        );
        let mut format = toml::Table::new();
        set(&mut format, "kind", "confluent_avro");
        format.insert("schemas".into(), toml::Value::Table(map));
        doc.insert("format".into(), toml::Value::Table(format));
    }
    let path = dir.join(format!("{}.toml", names.group));
    let text = toml::to_string(&doc).map_err(|e| BenchError::Config(e.to_string()))?;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A free loopback port for the child's HTTP server.
fn free_http_address() -> Result<String, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.to_string())
}

/// Kills the child when dropped (the bench never leaves one behind).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The sums the bench follows in the child's `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    consumed: u64,
    applied: u64,
    skipped: u64,
    dead_lettered: u64,
    commits: u64,
    requests: u64,
    models: u64,
}

impl Progress {
    fn parse(text: &str) -> Self {
        let mut p = Progress::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let value = value as u64;
            let metric = name.split('{').next().unwrap_or(name);
            match metric {
                "driftwatch_records_consumed_total" => p.consumed += value,
                "driftwatch_records_applied_total" => p.applied += value,
                "driftwatch_records_skipped_total" => p.skipped += value,
                "driftwatch_records_dead_lettered_total" => p.dead_lettered += value,
                "driftwatch_requests_produced_total" => p.requests += value,
                "driftwatch_models_tracked" => p.models = value,
                "driftwatch_transactions_total"
                    if name.contains("\"committed\"") || name.contains("\"stored\"") =>
                {
                    p.commits += value
                }
                _ => {}
            }
        }
        p
    }

    fn accounted(&self) -> u64 {
        self.applied + self.skipped + self.dead_lettered
    }
}

/// Resident memory of process `pid` (VmRSS), in bytes.
fn resident_bytes(pid: u32) -> u64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs `driftwatch run` on the topic until every event is accounted for
/// and committed.
fn run_pipeline(
    bootstrap: &str,
    topic: &str,
    names: &RunTopics,
    mode: Processing,
    options: &BenchOptions,
) -> Result<PipelineFigures, BenchError> {
    let dir = std::env::temp_dir().join(format!("driftwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let http = free_http_address()?;
    let config = pipeline_config(bootstrap, topic, names, mode, &http, options, &dir)?;
    let child = Command::new(&options.executable)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--watch-interval")
        .arg("0s")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()?;
    let mut child = ChildGuard(child);
    let pid = child.0.id();
    let http_client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| BenchError::Config(format!("http client: {e}")))?;
    let url = format!("http://{http}/metrics");

    let mut rss_idle = 0;
    let mut first: Option<Instant> = None;
    // The sample that saw every record accounted for: its time, the
    // commits counted at the sample before it and at it.
    let mut processed: Option<(Instant, u64, u64)> = None;
    // After the last record, a commit follows within one interval if any
    // work was left; none coming in three means the last one took it all.
    let commit_interval_ms = crate::config::Config::from_toml_str(&options.config_toml)
        .map_or(1_000, |c| c.kafka.commit_interval_ms);
    let grace = Duration::from_millis(commit_interval_ms.saturating_mul(3) + 500);
    let mut last_change = Instant::now();
    let mut last = Progress::default();
    let (durable_at, body, progress) = loop {
        if let Some(status) = child.0.try_wait()? {
            return Err(BenchError::PipelineExited(status));
        }
        let sampled_at = Instant::now();
        let body = match http_client.get(&url).send().and_then(|r| r.text()) {
            Ok(body) => body,
            Err(_) => {
                if last_change.elapsed() > STALL_TIMEOUT {
                    return Err(BenchError::Stalled {
                        phase: "pipeline start",
                        seconds: STALL_TIMEOUT.as_secs(),
                        detail: format!("{url} did not answer"),
                    });
                }
                std::thread::sleep(PROGRESS_POLL);
                continue;
            }
        };
        let progress = Progress::parse(&body);
        if progress.consumed == 0 {
            rss_idle = resident_bytes(pid);
        } else if first.is_none() {
            first = Some(sampled_at);
        }
        if progress.accounted() != last.accounted() || progress.commits != last.commits {
            last_change = Instant::now();
        }
        if processed.is_none() && progress.accounted() >= options.events {
            processed = Some((sampled_at, last.commits, progress.commits));
        }
        last = progress;
        if let Some((done_at, before, at_done)) = processed {
            if progress.commits > at_done {
                // A commit after every record was processed.
                break (sampled_at, body, progress);
            }
            if at_done > before && sampled_at.duration_since(done_at) > grace {
                // The commit just before the sample that saw the last
                // record took everything: nothing was left to commit.
                break (done_at, body, progress);
            }
        }
        if last_change.elapsed() > STALL_TIMEOUT {
            return Err(BenchError::Stalled {
                phase: "pipeline",
                seconds: STALL_TIMEOUT.as_secs(),
                detail: format!(
                    "{} of {} records accounted for, {} consumed",
                    progress.accounted(),
                    options.events,
                    progress.consumed
                ),
            });
        }
        std::thread::sleep(PROGRESS_POLL);
    };
    let rss_end = resident_bytes(pid);
    drop(child);
    let start = first.unwrap_or(durable_at);
    let processed_at = processed.map_or(durable_at, |(t, _, _)| t);
    let (snapshots, snapshot_bytes) = read_changelog(bootstrap, &names.changelog)?;
    let _ = std::fs::remove_file(&config);
    Ok(PipelineFigures {
        processing: mode,
        processed_seconds: processed_at.duration_since(start).as_secs_f64(),
        durable_seconds: durable_at.duration_since(start).as_secs_f64(),
        applied: progress.applied,
        skipped: progress.skipped,
        dead_lettered: progress.dead_lettered,
        requests: progress.requests,
        models: progress.models,
        rss_idle_bytes: rss_idle,
        rss_end_bytes: rss_end,
        metrics_bytes: body.len(),
        snapshots,
        snapshot_bytes,
    })
}

/// Counts the snapshots on the changelog and their bytes (tombstones aside).
fn read_changelog(bootstrap: &str, topic: &str) -> Result<(u64, u64), BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("bench-changelog-{}", unix_millis()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut open = assign_from_beginning(&consumer, topic)?;
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut last_progress = Instant::now();
    while open > 0 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                if let Some(payload) = msg.payload() {
                    count += 1;
                    bytes += payload.len() as u64;
                }
                last_progress = Instant::now();
            }
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => tracing::warn!(error = %e, "changelog reader"),
            None if last_progress.elapsed() > STALL_TIMEOUT => {
                return Err(BenchError::Stalled {
                    phase: "changelog read",
                    seconds: STALL_TIMEOUT.as_secs(),
                    detail: format!("{count} snapshots read"),
                })
            }
            None => {}
        }
    }
    Ok((count, bytes))
}

/// The schema id for `--format confluent_avro`.
pub fn confluent_format() -> WireFormat {
    WireFormat::ConfluentAvro {
        schema_id: BENCH_SCHEMA_ID,
    }
}
