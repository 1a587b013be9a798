//! End to end on the in-process cluster: JSON and Confluent Avro telemetry
//! for several models across several partitions gives exactly the requests
//! the offline replay of the same events gives, ids included.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_requests_equal_the_replay_oracle() {
    let kafka = kafka().await;
    let config = config(&kafka, "pipeline-test");
    let events = simulated(12, 4, 200, 7);
    let expected = oracle(&config, &events);
    let drifting: std::collections::BTreeSet<String> =
        (0..4).map(|i| format!("demo/drifting-{i:03}")).collect();
    let fired: std::collections::BTreeSet<String> =
        expected.iter().map(|r| r.model.lineage()).collect();
    assert_eq!(
        fired, drifting,
        "the oracle fires for exactly the drifting models"
    );

    let running = start(config).await;
    produce_events(&kafka, &producer(&kafka), &events, None).await;
    wait_processed(&[&running], events.len()).await;
    let requests = read_requests(&kafka);
    assert_eq!(requests, expected);
    assert_eq!(
        counter(&running, "records_applied_total"),
        events.len() as u64
    );
    assert_eq!(counter(&running, "records_dead_lettered_total"), 0);

    // Requests are keyed by lineage, so one model's requests stay ordered.
    for msg in read_topic(&kafka.bootstrap, &kafka.requests) {
        let request: driftwatch::model::RetrainRequest =
            serde_json::from_slice(rdkafka::Message::payload(&msg).expect("payload"))
                .expect("json");
        assert_eq!(
            rdkafka::Message::key(&msg),
            Some(request.model.lineage().as_bytes())
        );
    }
    stop(running).await;
}

/// `driftwatch replay` (the binary, on an Avro container file) prints the
/// same requests as the streaming run wrote to the output topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_command_gives_the_streaming_requests() {
    let kafka = kafka().await;
    let config = config(&kafka, "replay-test");
    let events = simulated(8, 3, 150, 11);

    let running = start(config).await;
    produce_events(&kafka, &producer(&kafka), &events, None).await;
    wait_processed(&[&running], events.len()).await;
    let streamed = read_requests(&kafka);
    stop(running).await;
    assert!(!streamed.is_empty());

    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("driftwatch.toml");
    std::fs::write(&config_path, config_toml(&kafka, "replay-test")).expect("write config");
    let input = dir.path().join("events.avro");
    driftwatch::codec::write_events_ocf(&input, &events).expect("write events");
    let report = dir.path().join("report.html");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_driftwatch"))
        .args(["replay", "--config"])
        .arg(&config_path)
        .arg(&input)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run driftwatch replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let replayed: Vec<driftwatch::model::RetrainRequest> = String::from_utf8(output.stdout)
        .expect("utf8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON request per line"))
        .collect();
    assert_eq!(sorted(replayed), streamed);

    // The HTML report: one section per model, every request marked.
    let html = std::fs::read_to_string(&report).expect("report written");
    assert!(html.starts_with("<!DOCTYPE html>"));
    for lineage in events.iter().map(|e| e.model.lineage()) {
        assert!(html.contains(&format!("<h2>{lineage}</h2>")), "{lineage}");
    }
    for request in &streamed {
        assert!(html.contains(&request.request_id), "{}", request.request_id);
    }
    for external in ["<script", "<link", " src="] {
        assert!(!html.contains(external), "self-contained: {external}");
    }
}
