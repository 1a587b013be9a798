//! Malformed, invalid and late records go to the dead-letter topic with
//! their reason and source coordinates, and the records around them still
//! flow.

mod common;

use common::*;
use driftwatch::kafka::pipeline::dlq_headers;
use rdkafka::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_dead_lettered_with_reasons_while_good_ones_flow() {
    let kafka = kafka().await;
    let config = config(&kafka, "dlq-test");
    let events = simulated(4, 2, 120, 3);
    let expected = oracle(&config, &events);
    assert!(!expected.is_empty());

    let mut invalid_event = events[0].clone();
    invalid_event.model.name = String::new();
    let invalid_json = serde_json::to_vec(&invalid_event).expect("json");
    let bad: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("json", Some(b"{\"model\": not json".to_vec())),
        (
            "json",
            Some(br#"{"model":{"project":"demo","name":"x"},"metrics":{}}"#.to_vec()),
        ),
        ("unknown_schema_id", Some(vec![0, 0, 0, 0, 99, 2, 4])),
        ("truncated", Some(vec![0, 0, 0])),
        ("unknown_format", Some(vec![0xff, 0x01, 0x02])),
        ("invalid", Some(invalid_json)),
        ("empty", None),
    ];
    // An event far behind its partition's watermark (no lateness allowed).
    let late = first_of(&events, "healthy-000");

    let running = start(config).await;
    let producer = producer(&kafka);
    let (first, rest) = events.split_at(events.len() / 2);
    produce_events(&kafka, &producer, first, None).await;
    for (_, payload) in &bad {
        produce_raw(
            &producer,
            &kafka.metrics,
            Some(b"demo/healthy-000"),
            payload.as_deref(),
        )
        .await;
    }
    produce_events(&kafka, &producer, std::slice::from_ref(&late), None).await;
    produce_events(&kafka, &producer, rest, None).await;
    let total = events.len() + bad.len() + 1;
    wait_processed(&[&running], total).await;

    assert_eq!(
        read_requests(&kafka),
        expected,
        "good records around the bad ones are processed"
    );
    let dead = read_topic(&kafka.bootstrap, &kafka.dlq);
    let mut kinds: Vec<String> = dead
        .iter()
        .filter_map(|m| header(m, dlq_headers::ERROR_KIND))
        .collect();
    kinds.sort();
    let mut wanted: Vec<String> = bad.iter().map(|(k, _)| k.to_string()).collect();
    wanted.push("too_late".to_owned());
    wanted.sort();
    assert_eq!(kinds, wanted);
    for msg in &dead {
        assert_eq!(
            header(msg, dlq_headers::SOURCE_TOPIC).as_deref(),
            Some(kafka.metrics.as_str())
        );
        let partition: i32 = header(msg, dlq_headers::SOURCE_PARTITION)
            .expect("partition")
            .parse()
            .expect("int");
        let offset: i64 = header(msg, dlq_headers::SOURCE_OFFSET)
            .expect("offset")
            .parse()
            .expect("int");
        assert!((0..METRIC_PARTITIONS).contains(&partition));
        assert!(offset >= 0);
        assert!(!header(msg, dlq_headers::ERROR).expect("reason").is_empty());
        assert_eq!(
            msg.key(),
            Some(&b"demo/healthy-000"[..]),
            "the original key is kept"
        );
    }
    // The original bytes are kept, so a fixed consumer can re-drive them.
    let invalid = dead
        .iter()
        .find(|m| header(m, dlq_headers::ERROR_KIND).as_deref() == Some("invalid"))
        .expect("invalid record");
    assert!(header(invalid, dlq_headers::ERROR)
        .expect("reason")
        .contains("model.name is empty"));
    let late = dead
        .iter()
        .find(|m| header(m, dlq_headers::ERROR_KIND).as_deref() == Some("too_late"))
        .expect("late record");
    let reason = header(late, dlq_headers::ERROR).expect("reason");
    assert!(
        reason.contains("behind the partition's watermark"),
        "{reason}"
    );
    assert_eq!(
        counter(&running, "records_dead_lettered_total"),
        bad.len() as u64 + 1
    );
    stop(running).await;
}

/// The first event of model `name`.
fn first_of(
    events: &[driftwatch::model::MetricEvent],
    name: &str,
) -> driftwatch::model::MetricEvent {
    events
        .iter()
        .find(|e| e.model.name == name)
        .cloned()
        .expect("the model has events")
}
