//! Crashes against the real broker: `driftwatch run` is killed with SIGKILL
//! at random moments while telemetry flows, and restarted, five times.
//! Afterwards the output topic, read committed (records of aborted
//! transactions removed by the log's own markers), is compared with what
//! `replay` of the same input gives.
//!
//! Exactly-once: exactly the replayed requests, no id twice.
//! At-least-once: every replayed request is there; a duplicate is the same
//! request again (same id, same content).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::instance::{committed_offsets, wait_committed, Instance};
use common::raw_log::read_log_stats;
use common::*;
use driftwatch::config::Config;
use driftwatch::model::RetrainRequest;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const MODELS: usize = 40;
const DRIFTING: usize = 30;
const TICKS: usize = 360;
const KILLS: usize = 5;

/// The test configuration with `processing`, one instance id across
/// restarts (a restart fences and aborts the killed one's transaction) and
/// a one-hour request timeout, so that drifting models fire repeatedly.
fn crash_toml(kafka: &TestKafka, group: &str, processing: &str) -> String {
    let toml = config_toml(kafka, group);
    let toml = set_key(&toml, "processing", &format!("\"{processing}\""));
    let toml = set_key(&toml, "instance_id", "\"crash-instance\"");
    set_key(&toml, "request_timeout", "\"1h\"")
}

/// Runs the crash scenario and returns the requests on the output topic
/// (read_committed, in no particular order) and the replay oracle.
async fn crash_scenario(processing: &str) -> (Vec<RetrainRequest>, Vec<RetrainRequest>) {
    let kafka = real_broker().await;
    let group_name = format!("crash-{processing}");
    eprintln!("input {}, output {}", kafka.metrics, kafka.requests);
    let toml = crash_toml(&kafka, &group_name, processing);
    let config = Config::from_toml_str(&toml).expect("config");
    let events = simulated(MODELS, DRIFTING, TICKS, 17);
    let expected = oracle(&config, &events);
    assert!(
        expected.len() >= 100,
        "the stream should give many requests, got {}",
        expected.len()
    );

    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let producer = producer(&kafka);
    let group = kafka.group(&group_name);
    let parts: Vec<&[driftwatch::model::MetricEvent]> =
        events.chunks(events.len().div_ceil(KILLS + 1)).collect();
    let mut cut_in_flight = 0;
    let mut produced = 0usize;
    for part in &parts[..KILLS] {
        let mut instance = Instance::spawn(dir.path(), "driftwatch", &toml);
        instance.wait_ready().await;
        let kill_after = Duration::from_millis(rng.gen_range(100..1_500));
        let flow = produce_paced(&kafka, &producer, part, MODELS, Duration::from_millis(15));
        let killer = async {
            tokio::time::sleep(kill_after).await;
            let applied = instance.counter("records_applied_total").await;
            instance.kill();
            applied
        };
        let ((), applied_before_kill) = tokio::join!(flow, killer);
        produced += part.len();
        let committed: i64 = committed_offsets(&kafka, &group).iter().flatten().sum();
        if (committed as usize) < produced {
            cut_in_flight += 1;
        }
        eprintln!(
            "[seed {seed}] SIGKILL after {kill_after:?}: {applied_before_kill} applied by this run, \
             {committed} of {produced} produced records committed"
        );
    }
    assert!(
        cut_in_flight > 0,
        "no kill landed while records were still unprocessed (seed {seed})"
    );

    let mut last = Instance::spawn(dir.path(), "driftwatch", &toml);
    last.wait_ready().await;
    produce_paced(
        &kafka,
        &producer,
        parts[KILLS],
        MODELS * 4,
        Duration::from_millis(5),
    )
    .await;
    let ends = end_offsets(&kafka.bootstrap, &kafka.metrics);
    assert_eq!(ends.values().sum::<i64>() as usize, events.len());
    wait_committed(&kafka, &group, &ends).await;
    let log = last.log.clone();
    let status = last.terminate();
    assert!(
        status.success(),
        "exit status {status}; log: {}",
        log.display()
    );

    // What the kills left in the log (aborted transactions among them), as
    // its own markers tell; the output is what a read_committed client reads.
    eprintln!(
        "output topic: {:?}",
        read_log_stats(&kafka.bootstrap, &kafka.requests)
    );
    (read_requests(&kafka), expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_survives_sigkill_five_times() {
    let (output, expected) = crash_scenario("exactly_once").await;
    assert_exactly_once(output, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_loses_nothing_and_duplicates_share_ids() {
    let (output, expected) = crash_scenario("at_least_once").await;
    let by_id: BTreeMap<&str, &RetrainRequest> = expected
        .iter()
        .map(|r| (r.request_id.as_str(), r))
        .collect();
    for request in &output {
        assert_eq!(
            by_id.get(request.request_id.as_str()),
            Some(&request),
            "every request written is one replay gives, content included"
        );
    }
    let mut distinct: Vec<RetrainRequest> = output.clone();
    distinct.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    distinct.dedup_by(|a, b| a.request_id == b.request_id);
    assert_eq!(distinct, expected, "nothing lost");
    eprintln!(
        "at-least-once: {} requests written for {} distinct",
        output.len(),
        expected.len()
    );
}
