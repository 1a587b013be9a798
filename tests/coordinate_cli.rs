//! The loop closed: driftwatch requests a retrain, `driftwatch coordinate`
//! (the stand-in coordinator, as a process) answers ACCEPTED, STARTED and
//! SUCCEEDED with a new version, and driftwatch applies the statuses: the
//! request is resolved and the model moves to the new version.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use driftwatch::codec::{schemas, Decoder};
use driftwatch::model::{MetricEvent, ModelRef, RetrainStatus, StatusKind};
use rdkafka::message::Message;

const MIN: i64 = 60_000;
const T0: i64 = 1_767_225_600_000;

fn breaching_minutes(to: i64) -> Vec<MetricEvent> {
    (0..to)
        .map(|m| MetricEvent {
            model: ModelRef::new("fraud", "scorer", Some("7")),
            timestamp: T0 + m * MIN,
            metrics: BTreeMap::from([("accuracy".to_owned(), 0.5)]),
            error: None,
            tags: BTreeMap::new(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stand_in_coordinator_answers_and_driftwatch_applies_the_answers() {
    let kafka = real_broker().await;
    let toml = config_toml(&kafka, "coordinate-loop");
    let config = driftwatch::config::Config::from_toml_str(&toml).expect("config");
    let running = start(config).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("driftwatch.toml");
    std::fs::write(&path, &toml).expect("config file");
    let coordinator = Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["coordinate", "--config"])
        .arg(&path)
        .args(["--delay", "1s", "--max-requests", "1", "--group-id"])
        .arg(kafka.group("coordinator"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn driftwatch coordinate");

    // Three breaching 5-minute windows: one request.
    let events = breaching_minutes(21);
    produce_events(&kafka, &producer(&kafka), &events, Some(Wire::Json)).await;
    wait_processed(&[&running], events.len()).await;
    let requests = read_requests(&kafka);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];

    let out = tokio::task::spawn_blocking(move || coordinator.wait_with_output())
        .await
        .expect("join")
        .expect("coordinator output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "coordinate failed: {stderr}");
    assert!(
        stderr.contains("answered 1 requests: 1 succeeded, 0 failed"),
        "{stderr}"
    );

    // Its answers, in order, keyed by the model's lineage.
    let decoder = Decoder::<RetrainStatus>::new(&Default::default(), schemas::RETRAIN_STATUS)
        .expect("decoder");
    let answers: Vec<(String, RetrainStatus)> = read_topic(&kafka.bootstrap, &kafka.status)
        .iter()
        .map(|m| {
            let key = String::from_utf8_lossy(m.key().expect("key")).into_owned();
            (
                key,
                decoder
                    .decode(m.payload().expect("payload"))
                    .expect("status"),
            )
        })
        .collect();
    assert_eq!(
        answers.iter().map(|(_, s)| s.status).collect::<Vec<_>>(),
        [
            StatusKind::Accepted,
            StatusKind::Started,
            StatusKind::Succeeded
        ]
    );
    for (key, status) in &answers {
        assert_eq!(key, "fraud/scorer");
        assert_eq!(status.request_id, request.request_id);
    }
    assert_eq!(answers[2].1.new_version.as_deref(), Some("8"));

    // driftwatch applied all three: the request is resolved and the model
    // is on the version the retrain produced.
    wait_until("statuses applied", || {
        counter(&running, "statuses_total") == 3
    })
    .await;
    let view: serde_json::Value =
        reqwest::get(format!("http://{}/models/fraud/scorer", running.http_addr))
            .await
            .expect("http")
            .json()
            .await
            .expect("json");
    assert_eq!(view["in_flight"], serde_json::Value::Null, "{view}");
    assert_eq!(view["version"], "8", "{view}");
    stop(running).await;
}
