//! Restore time: how long an instance takes to read the state of 100,000
//! models back from the changelog, against a real broker.
//!
//! The baseline, measured in the same run on the same topic, is a plain
//! read of every changelog record to the end of its partition without
//! decoding: the ratio is what decoding and rebuilding model state cost on
//! top of moving the bytes.
//!
//! `cargo bench --bench restore` (needs `DRIFTWATCH_TEST_BOOTSTRAP`, e.g.
//! the broker scripts/test.sh starts; `DRIFTWATCH_BENCH_MODELS` overrides
//! the model count). Under `cargo test` it runs once with 2,000 models as a
//! smoke test.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use driftwatch::codec::SnapshotCodec;
use driftwatch::engine::snapshot::ModelSnapshot;
use driftwatch::engine::state::PartitionState;
use driftwatch::kafka::outputs::Outputs;
use driftwatch::kafka::restore::{EofExpected, Restorer};
use driftwatch::simulator::{Simulator, SimulatorConfig};
use driftwatch::telemetry::Metrics;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Events per model before its snapshot is taken (a few windows' worth).
const TICKS: usize = 12;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let Ok(bootstrap) = std::env::var(common::BOOTSTRAP_ENV) else {
        eprintln!(
            "restore bench: set {} to a broker (scripts/test.sh starts one)",
            common::BOOTSTRAP_ENV
        );
        std::process::exit(if bench { 2 } else { 0 });
    };
    let models: usize = std::env::var("DRIFTWATCH_BENCH_MODELS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 100_000 } else { 2_000 });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run(&bootstrap, models));
}

async fn run(bootstrap: &str, models: usize) {
    let kafka = common::real_kafka(bootstrap).await;
    let partitions = common::METRIC_PARTITIONS;
    common::create_topics(bootstrap, &[(&kafka.changelog, partitions)]).await;
    let mut config = common::config(&kafka, "restore-bench");
    // Room for every model (the default cap is 100,000 per partition).
    config.engine.max_models_per_partition = config.engine.max_models_per_partition.max(models);
    let engine = driftwatch::service::engine_for(&config);

    // State for `models` models, as the pipeline would hold it, split over
    // the partitions by model number.
    let started = Instant::now();
    let mut sim = Simulator::new(SimulatorConfig {
        models,
        drifting: models / 10,
        seed: 3,
        ..SimulatorConfig::default()
    });
    let mut states: Vec<PartitionState> =
        (0..partitions).map(|_| PartitionState::default()).collect();
    for _ in 0..TICKS {
        for (i, event) in sim.tick().iter().enumerate() {
            engine.apply_event(&mut states[i % partitions as usize], event);
        }
    }
    let built = started.elapsed();

    let codec = SnapshotCodec::new().expect("codec");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .expect("producer");
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut deliveries = Vec::with_capacity(models);
    for (partition, state) in states.iter().enumerate() {
        for (lineage, model) in &state.models {
            let policy = engine.policy_for(lineage.as_str());
            let payload = codec
                .encode(&ModelSnapshot::capture(model, policy, TICKS as i64))
                .expect("encode");
            bytes += payload.len();
            let key = Outputs::changelog_key(&kafka.metrics, lineage.as_str());
            let record = FutureRecord::to(&kafka.changelog)
                .partition(partition as i32)
                .key(&key)
                .payload(&payload);
            deliveries.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
    }
    for delivery in deliveries {
        delivery.await.expect("delivery").expect("produced");
    }
    let written = started.elapsed();

    // Baseline: the same records read to the end without decoding.
    let started = Instant::now();
    let raw_records = read_to_end(bootstrap, &kafka.changelog, partitions);
    let raw = started.elapsed();
    assert_eq!(raw_records, models, "every snapshot was written");

    let restorer = Restorer::new(&config).expect("restorer");
    let metrics = Metrics::new().expect("metrics");
    let tps: Vec<(String, i32)> = (0..partitions)
        .map(|p| (kafka.metrics.clone(), p))
        .collect();
    let started = Instant::now();
    let restored = restorer
        .restore(
            &engine,
            &tps,
            None,
            &metrics,
            &driftwatch::kafka::heartbeat::Heartbeat::new(),
        )
        .expect("restore");
    let restore = started.elapsed();
    let restored_models: usize = restored.values().map(|m| m.len()).sum();
    assert_eq!(restored_models, models, "every model restored");
    for (partition, state) in states.iter().enumerate() {
        let back = &restored[&(kafka.metrics.clone(), partition as i32)];
        assert_eq!(back.len(), state.models.len());
    }

    println!("restore of {models} models ({} snapshot bytes, {} bytes/model avg) over {partitions} partitions:",
        bytes, bytes / models.max(1));
    println!("  state built in            {:>8.3} s", built.as_secs_f64());
    println!(
        "  snapshots written in      {:>8.3} s",
        written.as_secs_f64()
    );
    println!(
        "  baseline raw read         {:>8.3} s  ({:.0} records/s)",
        raw.as_secs_f64(),
        rate(models, raw)
    );
    println!(
        "  restore                   {:>8.3} s  ({:.0} models/s)",
        restore.as_secs_f64(),
        rate(models, restore)
    );
    println!(
        "  restore / raw read        {:>8.2}",
        restore.as_secs_f64() / raw.as_secs_f64()
    );
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Reads every record of `topic` to the end of each partition (as
/// reported by the fetch), without decoding; returns the count.
fn read_to_end(bootstrap: &str, topic: &str, partitions: i32) -> usize {
    let consumer: BaseConsumer<EofExpected> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "restore-bench-baseline")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .create_with_context(EofExpected)
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut open: HashMap<i32, bool> = (0..partitions).map(|p| (p, true)).collect();
    let mut count = 0;
    while open.values().any(|o| *o) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => count += 1,
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.insert(p, false);
            }
            Some(Err(e)) => panic!("baseline read: {e}"),
            None => {}
        }
    }
    count
}
