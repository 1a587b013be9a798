//! `driftwatch simulate` produces the simulator's telemetry to a topic of
//! the test broker: one event per model per tick, keyed by lineage, in the
//! chosen format, and the events decode as driftwatch reads them.

mod common;

use std::collections::BTreeMap;

use common::*;
use driftwatch::codec::{schemas, Decoder};
use driftwatch::model::MetricEvent;
use rdkafka::Message;

fn simulate(kafka: &TestKafka, extra: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["simulate", "--bootstrap-servers", &kafka.bootstrap])
        .args([
            "--topic",
            &kafka.metrics,
            "--models",
            "5",
            "--drifting",
            "2",
        ])
        .args([
            "--ticks",
            "4",
            "--ticks-per-second",
            "100",
            "--start-ms",
            "0",
        ])
        .args(extra)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("produced 20 events"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_produces_keyed_events_as_json_or_confluent_avro() {
    let kafka = kafka().await;
    simulate(
        &kafka,
        &[
            "--format",
            "avro",
            "--schema-id",
            "7",
            "--scenario",
            "latency",
        ],
    );
    let decoder = Decoder::<MetricEvent>::confluent_local(
        &[(7, schemas::METRIC_EVENT)],
        schemas::METRIC_EVENT,
    )
    .expect("decoder");
    let messages = read_topic(&kafka.bootstrap, &kafka.metrics);
    assert_eq!(messages.len(), 20, "5 models x 4 ticks");
    let mut per_model: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in &messages {
        let event = decoder
            .decode(m.payload().expect("payload"))
            .expect("decodes");
        event.validate().expect("valid");
        assert_eq!(
            m.key(),
            Some(event.model.lineage().as_bytes()),
            "keyed by lineage"
        );
        per_model
            .entry(event.model.lineage())
            .or_default()
            .push(event.timestamp);
    }
    assert_eq!(per_model.len(), 5);
    for times in per_model.values_mut() {
        times.sort_unstable();
        assert_eq!(
            times,
            &vec![0, 60_000, 120_000, 180_000],
            "one event a tick, 1m apart"
        );
    }

    simulate(&kafka, &["--format", "json", "--seed", "3"]);
    let messages = read_topic(&kafka.bootstrap, &kafka.metrics);
    assert_eq!(messages.len(), 40);
    let json_events: Vec<MetricEvent> = messages
        .iter()
        .filter_map(|m| m.payload())
        .filter(|p| p.first() == Some(&b'{'))
        .map(|p| serde_json::from_slice(p).expect("a JSON event"))
        .collect();
    let decoded = json_events.len();
    assert_eq!(decoded, 20);
}
