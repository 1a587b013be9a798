//! Prometheus metrics and tracing setup.

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric driftwatch exports. One instance per process, shared by `Arc`.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Records read from input topics (restored records included).
    pub records_consumed: IntCounterVec,
    /// Records applied to model state.
    pub records_applied: IntCounterVec,
    /// Records sent to the dead-letter topic, by reason.
    pub records_dead_lettered: IntCounterVec,
    /// Records deliberately not applied, by reason (no_policy, too_late, ...).
    pub records_skipped: IntCounterVec,
    /// Changelog records read back while restoring state.
    pub changelog_records_restored: IntCounter,
    pub changelog_snapshots_uncommitted: IntCounter,
    /// Time to restore one partition's state.
    pub restore_seconds: Histogram,
    /// Transactions committed and aborted (exactly-once mode).
    pub transactions: IntCounterVec,
    /// Transactional producers replaced after librdkafka gave one up.
    pub producer_renewals: IntCounter,
    /// Retrain requests produced, by action.
    pub requests_produced: IntCounterVec,
    /// Statuses received from the coordinator, by outcome.
    pub statuses: IntCounterVec,
    /// Models tracked by this instance.
    pub models_tracked: IntGauge,
    /// Models seen on more than one partition (producer keying problem).
    pub model_split: IntCounter,
    /// Partitions assigned to this instance.
    pub partitions_assigned: IntGauge,
    /// Partitions still rebuilding their state.
    pub partitions_restoring: IntGauge,
    /// Consumer lag per input partition, from librdkafka statistics.
    pub consumer_lag: IntGaugeVec,
    /// Time to decode and apply one record.
    pub processing_seconds: Histogram,
    /// Records whose key is not the lineage of the model in their value.
    pub key_mismatch: IntCounterVec,
    /// Models judged silent now, per policy (bounded: one series per policy).
    pub models_silent: IntGaugeVec,
    /// Model states removed, by cause (expired, evicted).
    pub models_removed: IntCounterVec,
    /// Configuration reloads by outcome (applied, rejected).
    pub config_reloads: IntCounterVec,
    /// Errors the group consumer's Kafka client reported, by librdkafka
    /// error code (`Authentication`, `SSL`, `AllBrokersDown`, ...).
    pub kafka_client_errors: IntCounterVec,
    /// Time to commit (exactly-once) or to settle and store (at-least-once).
    pub commit_batch_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("driftwatch".into()), None)?;
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let records_consumed = counter(
            "records_consumed_total",
            "Records read from input topics.",
            &["topic"],
        )?;
        let records_applied = counter(
            "records_applied_total",
            "Records applied to model state.",
            &["topic"],
        )?;
        let records_dead_lettered = counter(
            "records_dead_lettered_total",
            "Records sent to the dead-letter topic.",
            &["topic", "reason"],
        )?;
        let records_skipped = counter(
            "records_skipped_total",
            "Records counted under an explicit policy instead of applied.",
            &["topic", "reason"],
        )?;
        let changelog_records_restored = IntCounter::new(
            "changelog_records_restored_total",
            "Changelog records read back while restoring state.",
        )?;
        registry.register(Box::new(changelog_records_restored.clone()))?;
        let changelog_snapshots_uncommitted = IntCounter::new(
            "changelog_snapshots_uncommitted_total",
            "Snapshots ignored on restore because they claim input beyond the committed offset \
             (written by a transaction that never committed).",
        )?;
        registry.register(Box::new(changelog_snapshots_uncommitted.clone()))?;
        let producer_renewals = IntCounter::new(
            "producer_renewals_total",
            "Transactional producers replaced after librdkafka declared one unusable \
             (the open transaction aborted, processing rewound to the committed offsets).",
        )?;
        registry.register(Box::new(producer_renewals.clone()))?;
        let restore_seconds = Histogram::with_opts(
            HistogramOpts::new("restore_seconds", "Time to restore one partition's state.")
                .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 120.0]),
        )?;
        registry.register(Box::new(restore_seconds.clone()))?;
        let transactions = counter(
            "transactions_total",
            "Transactions by outcome (committed, aborted).",
            &["outcome"],
        )?;
        let requests_produced = counter(
            "requests_produced_total",
            "Retrain requests produced, by action (per-model detail is on /models/{project}/{name}).",
            &["action"],
        )?;
        let config_reloads = counter(
            "config_reloads_total",
            "Configuration reloads (SIGHUP or a changed file) by outcome: applied, rejected.",
            &["outcome"],
        )?;
        let kafka_client_errors = counter(
            "kafka_client_errors_total",
            "Errors reported by the Kafka client (authentication, TLS, brokers down), by librdkafka error code.",
            &["code"],
        )?;
        let models_silent = IntGaugeVec::new(
            Opts::new(
                "models_silent",
                "Models a silence rule judges silent now, by the pattern of their policy.",
            ),
            &["policy"],
        )?;
        registry.register(Box::new(models_silent.clone()))?;
        let key_mismatch = counter(
            "records_key_mismatch_total",
            "Records whose key is not the project/name of the model in their value (applied, but the producer splits models across partitions).",
            &["topic"],
        )?;
        let models_removed = counter(
            "models_removed_total",
            "Model states removed: expired (idle for engine.idle_timeout), evicted (least recently seen, at engine.max_models_per_partition) or too_large (its snapshot exceeds the changelog's record limit).",
            &["cause"],
        )?;
        let statuses = counter(
            "statuses_total",
            "Coordinator statuses received.",
            &["outcome"],
        )?;
        let models_tracked = IntGauge::new("models_tracked", "Models tracked by this instance.")?;
        registry.register(Box::new(models_tracked.clone()))?;
        let model_split = IntCounter::new(
            "model_split_total",
            "Models seen on more than one partition (telemetry not keyed by lineage).",
        )?;
        registry.register(Box::new(model_split.clone()))?;
        let partitions_assigned =
            IntGauge::new("partitions_assigned", "Input partitions assigned.")?;
        registry.register(Box::new(partitions_assigned.clone()))?;
        let partitions_restoring = IntGauge::new(
            "partitions_restoring",
            "Assigned partitions still rebuilding state.",
        )?;
        registry.register(Box::new(partitions_restoring.clone()))?;
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "consumer_lag",
                "Consumer lag per input partition (records).",
            ),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(consumer_lag.clone()))?;
        let processing_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "processing_seconds",
                "Time to apply one polled batch of records (decoded beforehand, outside the lock).",
            )
            .buckets(vec![
                1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2,
            ]),
        )?;
        registry.register(Box::new(processing_seconds.clone()))?;
        let commit_batch_seconds = HistogramVec::new(
            HistogramOpts::new(
                "commit_seconds",
                "Time to make processed work durable: commit a transaction, or await outputs and store offsets.",
            )
            .buckets(vec![1e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 5.0]),
            &["mode"],
        )?;
        registry.register(Box::new(commit_batch_seconds.clone()))?;
        Ok(Metrics {
            registry,
            records_consumed,
            records_applied,
            records_dead_lettered,
            records_skipped,
            changelog_records_restored,
            changelog_snapshots_uncommitted,
            restore_seconds,
            transactions,
            producer_renewals,
            requests_produced,
            models_silent,
            models_removed,
            key_mismatch,
            config_reloads,
            kafka_client_errors,
            statuses,
            models_tracked,
            model_split,
            partitions_assigned,
            partitions_restoring,
            consumer_lag,
            processing_seconds,
            commit_batch_seconds,
        })
    }

    /// The full name of every metric this process exports (without the
    /// `_bucket`/`_sum`/`_count` series of histograms), whether or not it
    /// has a value yet: what dashboards and alert rules may refer to.
    pub fn exported_names(&self) -> Vec<String> {
        let collectors: [&dyn Collector; 23] = [
            &self.config_reloads,
            &self.kafka_client_errors,
            &self.records_consumed,
            &self.records_applied,
            &self.records_dead_lettered,
            &self.records_skipped,
            &self.changelog_records_restored,
            &self.changelog_snapshots_uncommitted,
            &self.restore_seconds,
            &self.transactions,
            &self.producer_renewals,
            &self.requests_produced,
            &self.statuses,
            &self.models_tracked,
            &self.model_split,
            &self.partitions_assigned,
            &self.partitions_restoring,
            &self.consumer_lag,
            &self.processing_seconds,
            &self.models_silent,
            &self.models_removed,
            &self.key_mismatch,
            &self.commit_batch_seconds,
        ];
        collectors
            .iter()
            .flat_map(|c| c.desc())
            .map(|d| format!("driftwatch_{}", d.fq_name))
            .collect()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the tracing subscriber: logs go to stderr, filtered by
/// `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("logging already initialised: {e}");
    }
}
