//! Scaling the group while telemetry flows, against the real broker: one
//! instance, then three, then one again. Partitions move between running
//! instances (cooperative rebalances: revoked partitions are committed
//! before release, assigned ones restored from the changelog) and the
//! output, read committed, is still exactly what `replay` gives.

mod common;

use std::time::Duration;

use common::instance::{wait_committed, Instance};
use common::raw_log::read_log_stats;
use common::*;
use driftwatch::config::Config;
use driftwatch::model::MetricEvent;

const MODELS: usize = 40;
const DRIFTING: usize = 30;
const TICKS: usize = 360;

fn instance_toml(kafka: &TestKafka, group: &str, instance: &str) -> String {
    let toml = config_toml(kafka, group);
    let toml = set_key(&toml, "processing", "\"exactly_once\"");
    let toml = set_key(&toml, "instance_id", &format!("\"{instance}\""));
    set_key(&toml, "request_timeout", "\"1h\"")
}

async fn flow(
    kafka: &TestKafka,
    producer: &rdkafka::producer::FutureProducer,
    part: &[MetricEvent],
) {
    produce_paced(kafka, producer, part, MODELS, Duration::from_millis(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_then_three_then_one_instance_keeps_exactly_once() {
    let kafka = real_broker().await;
    let group_name = "scale";
    let group = kafka.group(group_name);
    let toml = |instance: &str| instance_toml(&kafka, group_name, instance);
    let config = Config::from_toml_str(&toml("oracle")).expect("config");
    let events = simulated(MODELS, DRIFTING, TICKS, 23);
    let expected = oracle(&config, &events);
    let parts: Vec<&[MetricEvent]> = events.chunks(events.len().div_ceil(4)).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = producer(&kafka);

    // One instance.
    let mut a = Instance::spawn(dir.path(), "a", &toml("a"));
    a.wait_ready().await;
    flow(&kafka, &producer, parts[0]).await;

    // Three: two join while the stream flows.
    let mut b = Instance::spawn(dir.path(), "b", &toml("b"));
    let mut c = Instance::spawn(dir.path(), "c", &toml("c"));
    let joins = async {
        b.wait_ready().await;
        c.wait_ready().await;
    };
    tokio::join!(flow(&kafka, &producer, parts[1]), joins);
    // Ready means the process runs, not that the group has handed it
    // partitions yet: Kafka's rebalance may still be under way. Flow the
    // third part once both hold partitions, so they process some of it.
    let assigned = Duration::from_secs(60);
    b.wait_positive("partitions_assigned", assigned).await;
    c.wait_positive("partitions_assigned", assigned).await;
    flow(&kafka, &producer, parts[2]).await;
    let applied_b = b.wait_positive("records_applied_total", assigned).await;
    let applied_c = c.wait_positive("records_applied_total", assigned).await;

    // One again: the two leave gracefully while the stream flows.
    let leave = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (log_b, log_c) = (b.log.clone(), c.log.clone());
        let (status_b, status_c) = (b.terminate(), c.terminate());
        assert!(status_b.success(), "b: {status_b}; log {}", log_b.display());
        assert!(status_c.success(), "c: {status_c}; log {}", log_c.display());
    };
    tokio::join!(flow(&kafka, &producer, parts[3]), leave);

    let ends = end_offsets(&kafka.bootstrap, &kafka.metrics);
    assert_eq!(ends.values().sum::<i64>() as usize, events.len());
    wait_committed(&kafka, &group, &ends).await;
    let log_a = a.log.clone();
    let status = a.terminate();
    assert!(status.success(), "a: {status}; log {}", log_a.display());

    eprintln!(
        "b applied {applied_b}, c applied {applied_c}; output topic: {:?}",
        read_log_stats(&kafka.bootstrap, &kafka.requests)
    );
    assert_exactly_once(read_requests(&kafka), &expected);
}
