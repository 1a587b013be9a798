//! A restarted instance resumes from the committed offsets with its state
//! restored from the changelog: the restored state equals the state before
//! the restart, no request is lost and none is produced twice.

mod common;

use std::collections::BTreeMap;

use common::*;
use driftwatch::engine::snapshot::ModelSnapshot;
use driftwatch::service::Running;

/// Every model the instance holds, as snapshots (the changelog's form).
fn snapshots(running: &Running) -> BTreeMap<String, ModelSnapshot> {
    let shell = running.shared.lock();
    let mut out = BTreeMap::new();
    for slot in shell.slots.values() {
        for (lineage, model) in &slot.state.models {
            let policy = shell.engine.policy_for(lineage.as_str());
            out.insert(
                lineage.to_string(),
                ModelSnapshot::capture(model, policy, model.input_offset),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_committed_offsets_without_losing_a_request() {
    let kafka = kafka().await;
    let events = simulated(10, 4, 200, 9);
    let expected = oracle(&config(&kafka, "restart-test"), &events);
    // Split inside the drift, so that some request needs windows from both
    // sides of the restart.
    let split_tick = 80;
    let split_ts = events.iter().map(|e| e.timestamp).min().expect("events") + split_tick * 60_000;
    let (before, after): (Vec<_>, Vec<_>) =
        events.iter().cloned().partition(|e| e.timestamp < split_ts);
    assert!(
        expected
            .iter()
            .any(|r| r.triggered_at > split_ts && r.triggered_at - 15 * 60_000 < split_ts),
        "some request's confirmation spans the restart: {:?}",
        expected.iter().map(|r| r.triggered_at).collect::<Vec<_>>()
    );

    let producer = producer(&kafka);
    let first = start(config(&kafka, "restart-test")).await;
    produce_events(&kafka, &producer, &before, None).await;
    wait_processed(&[&first], before.len()).await;
    let produced_before = read_requests(&kafka);
    // Everything processed is committed (wait_processed waits for that).
    let before_restart = snapshots(&first);
    stop(first).await;

    let second = start(config(&kafka, "restart-test")).await;
    wait_until("state restored", || second.shared.lock().ready()).await;
    assert_eq!(
        snapshots(&second),
        before_restart,
        "the restored state equals the state before the restart"
    );
    assert_eq!(before_restart.len(), 10, "every model has state");
    produce_events(&kafka, &producer, &after, None).await;
    wait_processed(&[&second], after.len()).await;

    assert_eq!(
        counter(&second, "records_consumed_total"),
        after.len() as u64,
        "resumed exactly at the committed offsets"
    );
    assert!(
        counter(&second, "changelog_records_restored_total") > 0,
        "state came back from the changelog"
    );
    let all = read_requests(&kafka);
    assert_eq!(all, expected, "no request lost, none twice");
    assert!(produced_before.len() < expected.len());
    stop(second).await;
}
