//! Statuses from the coordinator reach the engine: no second request while
//! one is unresolved, a terminal status reopens the model, and the model's
//! state is visible over HTTP.

mod common;

use std::collections::BTreeMap;

use common::*;
use driftwatch::model::{MetricEvent, ModelRef, RetrainStatus, StatusKind};

const MIN: i64 = 60_000;
const T0: i64 = 1_767_225_600_000;

/// One event a minute with `accuracy`, minutes `from..to`.
fn minutes(from: i64, to: i64, accuracy: f64) -> Vec<MetricEvent> {
    (from..to)
        .map(|m| MetricEvent {
            model: ModelRef::new("fraud", "scorer", Some("7")),
            timestamp: T0 + m * MIN,
            metrics: BTreeMap::from([("accuracy".to_owned(), accuracy)]),
            error: None,
            tags: BTreeMap::new(),
        })
        .collect()
}

async fn model_json(http: std::net::SocketAddr) -> serde_json::Value {
    reqwest::get(format!("http://{http}/models/fraud/scorer"))
        .await
        .expect("http")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_status_reopens_the_model_and_nothing_fires_while_unresolved() {
    let kafka = kafka().await;
    let running = start(config(&kafka, "status-test")).await;
    let producer = producer(&kafka);
    let mut sent = 0usize;

    // Three breaching 5-minute windows: one request.
    let batch = minutes(0, 21, 0.5);
    sent += batch.len();
    produce_events(&kafka, &producer, &batch, Some(Wire::Json)).await;
    wait_processed(&[&running], sent).await;
    let first = read_requests(&kafka);
    assert_eq!(first.len(), 1);
    let view = model_json(running.http_addr).await;
    assert_eq!(
        view["in_flight"]["request_id"],
        first[0].request_id.as_str()
    );

    // Long after the cooldown, still breaching, still unresolved: nothing.
    let batch = minutes(21, 150, 0.5);
    sent += batch.len();
    produce_events(&kafka, &producer, &batch, Some(Wire::Json)).await;
    wait_processed(&[&running], sent).await;
    assert_eq!(
        read_requests(&kafka),
        first,
        "no second request while one is unresolved"
    );
    assert!(
        model_json(running.http_addr).await["counters"]["suppressed_while_in_flight"].as_u64()
            > Some(0)
    );

    // ACCEPTED keeps it unresolved; SUCCEEDED reopens.
    for kind in [StatusKind::Accepted, StatusKind::Succeeded] {
        let status = RetrainStatus {
            request_id: first[0].request_id.clone(),
            model: first[0].model.clone(),
            status: kind,
            new_version: None,
            timestamp: T0 + 150 * MIN,
        };
        produce_status(&kafka, &producer, &status).await;
    }
    wait_until("statuses applied", || {
        counter(&running, "statuses_total") == 2
    })
    .await;
    assert_eq!(
        model_json(running.http_addr).await["in_flight"],
        serde_json::Value::Null
    );

    let batch = minutes(150, 171, 0.5);
    sent += batch.len();
    produce_events(&kafka, &producer, &batch, Some(Wire::Json)).await;
    wait_processed(&[&running], sent).await;
    let all = read_requests(&kafka);
    assert_eq!(all.len(), 2, "the model fires again once resolved");
    assert!(all
        .iter()
        .any(|r| r.request_id != first[0].request_id && r.triggered_at >= T0 + 150 * MIN));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_unknown_models_over_http() {
    let kafka = kafka().await;
    let running = start(config(&kafka, "http-test")).await;
    let base = format!("http://{}", running.http_addr);
    wait_until("ready", || running.shared.lock().ready()).await;
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .expect("http")
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .expect("http")
            .status(),
        200
    );
    let missing = reqwest::get(format!("{base}/models/no/such"))
        .await
        .expect("http");
    assert_eq!(missing.status(), 404);

    let batch = minutes(0, 10, 0.9);
    produce_events(&kafka, &producer(&kafka), &batch, Some(Wire::Json)).await;
    wait_processed(&[&running], batch.len()).await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("http")
        .text()
        .await
        .expect("body");
    for name in [
        format!(
            "driftwatch_records_consumed_total{{topic=\"{}\"}} 10",
            kafka.metrics
        ),
        format!(
            "driftwatch_records_applied_total{{topic=\"{}\"}} 10",
            kafka.metrics
        ),
        "driftwatch_models_tracked 1".to_owned(),
        "driftwatch_processing_seconds_bucket".to_owned(),
        "driftwatch_partitions_assigned 4".to_owned(),
    ] {
        assert!(metrics.contains(&name), "missing {name} in\n{metrics}");
    }
    let view = model_json(running.http_addr).await;
    assert_eq!(view["model"], "fraud/scorer");
    assert_eq!(view["version"], "7");
    assert_eq!(view["rules"]["accuracy-drop"]["recent_drift_windows"], 0);
    stop(running).await;
}
