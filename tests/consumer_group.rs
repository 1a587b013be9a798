//! Two instances in one consumer group split the partitions and together
//! produce the same requests as one instance (the replay oracle).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_partitions_and_produce_the_same_requests() {
    let kafka = kafka().await;
    let events = simulated(16, 6, 200, 21);
    let expected = oracle(&config(&kafka, "group-test"), &events);

    let a = start(config(&kafka, "group-test")).await;
    let b = start(config(&kafka, "group-test")).await;
    let assigned = |r: &driftwatch::service::Running| r.shared.lock().slots.len();
    wait_until("partitions split between both instances", || {
        assigned(&a) > 0
            && assigned(&b) > 0
            && assigned(&a) + assigned(&b) == METRIC_PARTITIONS as usize
    })
    .await;

    produce_events(&kafka, &producer(&kafka), &events, None).await;
    wait_processed(&[&a, &b], events.len()).await;

    assert_eq!(read_requests(&kafka), expected);
    // Both instances did real work, and no model's state is split.
    assert!(counter(&a, "records_applied_total") > 0);
    assert!(counter(&b, "records_applied_total") > 0);
    assert_eq!(
        counter(&a, "model_split_total") + counter(&b, "model_split_total"),
        0
    );
    let models = a.shared.lock().models_tracked() + b.shared.lock().models_tracked();
    assert_eq!(models, 16);
    stop(a).await;
    stop(b).await;
}

/// While the stream flows, a second instance joins and takes partitions
/// over: the partitions it receives are restored from the changelog, and no
/// request is lost or produced twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_joining_mid_stream_loses_and_duplicates_nothing() {
    let kafka = kafka().await;
    let events = simulated(16, 6, 240, 5);
    let expected = oracle(&config(&kafka, "join-test"), &events);
    let (first, rest) = events.split_at(events.len() / 2);

    let a = start(config(&kafka, "join-test")).await;
    let producer = producer(&kafka);
    produce_events(&kafka, &producer, first, None).await;
    wait_processed(&[&a], first.len()).await;

    let b = start(config(&kafka, "join-test")).await;
    wait_until("rebalanced onto both", || {
        let (na, nb) = (a.shared.lock().slots.len(), b.shared.lock().slots.len());
        na > 0 && nb > 0 && na + nb == METRIC_PARTITIONS as usize
    })
    .await;
    produce_events(&kafka, &producer, rest, None).await;
    wait_processed(&[&a, &b], events.len()).await;

    assert_eq!(read_requests(&kafka), expected);
    assert!(
        counter(&b, "changelog_records_restored_total") > 0,
        "the joiner restored state from the changelog"
    );
    stop(a).await;
    stop(b).await;
}
