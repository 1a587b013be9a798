//! The model lifecycle through the real pipeline on the test broker: idle
//! models expire with a tombstone in the changelog and stay gone after a
//! restart, a flood of new keys is evicted without locking a real model
//! out, a broken clock is dead-lettered without blinding its partition, and
//! no single record (too large to dead-letter, or state too large for the
//! changelog) can stop the pipeline or make a restart loop.

mod common;

use std::collections::BTreeMap;

use common::*;
use driftwatch::config::Config;
use driftwatch::kafka::pipeline::dlq_headers;
use driftwatch::model::{MetricEvent, ModelRef};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;
/// 3000-01-01T00:00:00Z.
const YEAR_3000: i64 = 32_503_680_000_000;

fn ev(name: &str, minute: i64, accuracy: f64) -> MetricEvent {
    MetricEvent {
        model: ModelRef::new("demo", name, Some("1")),
        timestamp: T0 + minute * MIN,
        metrics: BTreeMap::from([
            ("accuracy".to_owned(), accuracy),
            ("latency_ms".to_owned(), 40.0),
        ]),
        error: None,
        tags: BTreeMap::new(),
    }
}

async fn produce_to_one_partition(
    kafka: &TestKafka,
    producer: &FutureProducer,
    events: &[MetricEvent],
) {
    produce_json_to_partition(kafka, producer, events, 0).await;
}

async fn start_with(
    kafka: &TestKafka,
    group: &str,
    edit: impl FnOnce(String) -> String,
) -> (Config, driftwatch::service::Running) {
    let config = Config::from_toml_str(&edit(config_toml(kafka, group))).expect("test config");
    let running = start(config.clone()).await;
    (config, running)
}

fn with_engine(toml: String, lines: &str) -> String {
    toml.replace("[engine]\n", &format!("[engine]\n{lines}\n"))
}

/// The latest changelog record of each key.
fn latest_changelog(kafka: &TestKafka) -> BTreeMap<String, rdkafka::message::OwnedMessage> {
    read_topic(&kafka.bootstrap, &kafka.changelog)
        .into_iter()
        .filter_map(|m| {
            let key = String::from_utf8(m.key()?.to_vec()).ok()?;
            Some((key, m))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_model_expires_with_a_tombstone_and_a_restart_does_not_bring_it_back() {
    let kafka = real_broker().await;
    let producer = producer(&kafka);
    // Silent after 20 minutes without an event, expired after 30.
    let edit = |t: String| {
        with_engine(t, "idle_timeout = \"30m\"").replace(
            "[[policy.rule]]\nname = \"accuracy-drop\"",
            "[[policy.rule]]\nname = \"quiet\"\ndetector = { kind = \"silence\", after = \"20m\" }\naction = \"none\"\n\n[[policy.rule]]\nname = \"accuracy-drop\"",
        )
    };
    let (_, running) = start_with(&kafka, "expiry", edit).await;
    let mut events: Vec<MetricEvent> = (0..10)
        .flat_map(|m| [ev("a", m, 0.95), ev("b", m, 0.95)])
        .collect();
    events.extend((10..35).map(|m| ev("b", m, 0.95)));
    produce_to_one_partition(&kafka, &producer, &events).await;
    wait_processed(&[&running], events.len()).await;
    let silent = || {
        running
            .shared
            .metrics
            .models_silent
            .with_label_values(&["*"])
            .get()
    };
    assert_eq!(silent(), 1, "a is silent, noticed by the watermark");
    assert!(
        running
            .shared
            .lock()
            .model_view("demo/a")
            .expect("a")
            .silent
    );
    let metrics = running.shared.metrics.render();
    assert!(
        !metrics.contains("model=\""),
        "no series carries a model label"
    );
    let more: Vec<MetricEvent> = (35..60).map(|m| ev("b", m, 0.95)).collect();
    produce_to_one_partition(&kafka, &producer, &more).await;
    wait_processed(&[&running], events.len() + more.len()).await;
    assert_eq!(counter(&running, "models_removed_total"), 1);
    assert_eq!(silent(), 0, "an expired model is no longer counted");
    assert!(running.shared.lock().model_view("demo/a").is_none());
    assert!(running.shared.lock().model_view("demo/b").is_some());
    stop(running).await;

    let changelog = latest_changelog(&kafka);
    let key_a = format!("{}/demo/a", kafka.metrics);
    let tombstone = changelog.get(&key_a).expect("a's changelog entry");
    assert!(
        tombstone.payload().is_none(),
        "the latest entry of an expired model is a tombstone"
    );
    let headers = tombstone.headers().expect("tombstone headers");
    assert!(headers.iter().any(|h| h.key == "driftwatch.input.offset"));
    let key_b = format!("{}/demo/b", kafka.metrics);
    assert!(changelog[&key_b].payload().is_some());

    let (_, restarted) = start_with(&kafka, "expiry", edit).await;
    wait_until("restored", || restarted.shared.lock().ready()).await;
    {
        let shell = restarted.shared.lock();
        assert!(
            shell.model_view("demo/a").is_none(),
            "an expired model stays gone"
        );
        assert!(shell.model_view("demo/b").is_some());
        assert_eq!(shell.models_tracked(), 1);
    }
    // It comes back, fresh, with its next event.
    produce_to_one_partition(&kafka, &producer, &[ev("a", 61, 0.95)]).await;
    wait_processed(&[&restarted], 1).await;
    let view = restarted
        .shared
        .lock()
        .model_view("demo/a")
        .expect("a is back");
    assert_eq!(view.counters.events_applied, 1);
    stop(restarted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_new_keys_is_evicted_and_a_real_model_still_gets_its_request() {
    let kafka = real_broker().await;
    let producer = producer(&kafka);
    let cap = 50;
    let edit = |t: String| with_engine(t, &format!("max_models_per_partition = {cap}"));
    let (_, running) = start_with(&kafka, "flood", edit).await;
    // A misconfigured producer floods the partition with 2,000 new keys
    // (far more than the cap)...
    let mut events: Vec<MetricEvent> = (0..20)
        .flat_map(|m| (0..100).map(move |k| ev(&format!("junk-{m}-{k}"), m, 0.95)))
        .collect();
    // ...then a real model's accuracy drops.
    events.extend((20..45).map(|m| ev("real", m, if m < 25 { 0.95 } else { 0.5 })));
    produce_to_one_partition(&kafka, &producer, &events).await;
    wait_processed(&[&running], events.len()).await;
    assert!(
        running.shared.lock().models_tracked() <= cap,
        "memory stays bounded by the cap"
    );
    // /metrics does not grow with the models seen.
    let metrics = running.shared.metrics.render();
    assert!(!metrics.contains("junk-"), "no series names a model");
    assert!(counter(&running, "models_removed_total") >= (2_000 - cap) as u64);
    let requests = read_requests(&kafka);
    assert!(
        requests.iter().any(|r| r.model.lineage() == "demo/real"),
        "the real model's request: {requests:?}"
    );
    stop(running).await;
    // Evicted models left tombstones: a restore holds at most the cap.
    let live = latest_changelog(&kafka)
        .values()
        .filter(|m| m.payload().is_some())
        .count();
    assert!(live <= cap, "{live} live changelog entries");
    let (_, restarted) = start_with(&kafka, "flood", edit).await;
    wait_until("restored", || restarted.shared.lock().ready()).await;
    assert!(restarted.shared.lock().models_tracked() <= cap);
    stop(restarted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_from_the_year_3000_is_dead_lettered_and_the_partition_carries_on() {
    let kafka = real_broker().await;
    let producer = producer(&kafka);
    let (_, running) = start_with(&kafka, "clock", |t| t).await;
    let mut events: Vec<MetricEvent> = (0..100).map(|m| ev("a", m, 0.95)).collect();
    let mut broken = ev("a", 100, 0.95);
    broken.timestamp = YEAR_3000;
    events.push(broken);
    events.extend((100..130).flat_map(|m| [ev("a", m, 0.5), ev("b", m, 0.5)]));
    produce_to_one_partition(&kafka, &producer, &events).await;
    // A producer that keys by something else than project/name: counted,
    // and the event is still applied.
    let mis_keyed = serde_json::to_vec(&ev("c", 130, 0.95)).expect("json");
    produce_raw(
        &producer,
        &kafka.metrics,
        Some(b"not-the-lineage"),
        Some(&mis_keyed),
    )
    .await;
    wait_processed(&[&running], events.len() + 1).await;
    assert_eq!(counter(&running, "records_key_mismatch_total"), 1);
    assert!(running.shared.lock().model_view("demo/c").is_some());
    let dead = read_topic(&kafka.bootstrap, &kafka.dlq);
    assert_eq!(dead.len(), 1);
    assert_eq!(
        header(&dead[0], dlq_headers::ERROR_KIND).as_deref(),
        Some("future_timestamp")
    );
    let reason = header(&dead[0], dlq_headers::ERROR).unwrap_or_default();
    assert!(reason.contains("record's timestamp"), "{reason}");
    let models: std::collections::BTreeSet<String> = read_requests(&kafka)
        .iter()
        .map(|r| r.model.lineage())
        .collect();
    assert_eq!(models, ["demo/a".to_owned(), "demo/b".to_owned()].into());
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_can_stop_the_pipeline_and_a_restart_does_not_loop_exactly_once() {
    no_record_can_stop_the_pipeline("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_can_stop_the_pipeline_and_a_restart_does_not_loop_at_least_once() {
    no_record_can_stop_the_pipeline("at_least_once").await;
}

async fn no_record_can_stop_the_pipeline(processing: &str) {
    let kafka = real_broker().await;
    let producer = producer(&kafka);
    // A small record limit for driftwatch's own producer; a week-long
    // percentile window (which keeps its samples) makes a snapshot larger
    // than that.
    let edit = |t: String| {
        let t = t.replace(
            "processing = \"exactly_once\"",
            &format!("processing = \"{processing}\""),
        );
        assert!(t.contains(&format!("processing = \"{processing}\"")));
        let t = t
            .replace(
                "properties = { \"session.timeout.ms\" = \"6000\" }",
                "properties = { \"session.timeout.ms\" = \"6000\", \"message.max.bytes\" = \"100000\" }",
            )
            .replace(
                "kind = \"count\", size = 50, aggregate = \"p95\"",
                "kind = \"tumbling\", size = \"7d\", aggregate = \"p95\"",
            );
        assert!(t.contains("\"message.max.bytes\" = \"100000\"") && t.contains("size = \"7d\""));
        t
    };
    let (_, running) = start_with(&kafka, "poison", edit).await;
    // 1. Garbage too large to dead-letter as it is.
    let garbage = vec![b'#'; 300_000];
    produce_raw(
        &producer,
        &kafka.metrics,
        Some(b"demo/garbage"),
        Some(&garbage),
    )
    .await;
    // 2. A valid event whose model name is far too long to become state.
    let long_name = ev(&"n".repeat(1_000), 0, 0.9);
    produce_raw(
        &producer,
        &kafka.metrics,
        Some(b"demo/long"),
        Some(&serde_json::to_vec(&long_name).expect("json")),
    )
    .await;
    // 3. A model whose state outgrows the changelog's record limit.
    let heavy: Vec<MetricEvent> = (0..15_000).map(|i| ev("heavy", i / 10, 0.95)).collect();
    produce_to_one_partition(&kafka, &producer, &heavy).await;
    // 4. Later records of the same partition.
    produce_to_one_partition(&kafka, &producer, &[ev("after", 2_000, 0.95)]).await;
    let sent = 2 + heavy.len() + 1;
    wait_processed(&[&running], sent).await;
    assert!(running.shared.lock().model_view("demo/after").is_some());
    // The model whose snapshot grew too large was dropped (and started
    // afresh with its next events).
    let removed = running
        .shared
        .metrics
        .models_removed
        .with_label_values(&["too_large"])
        .get();
    assert!(removed >= 1, "dropped for size: {removed}");
    // Its next event starts it afresh. (Sent only now: the commit that
    // dropped it may have come after its last event, however fast the
    // pipeline ran.)
    produce_to_one_partition(&kafka, &producer, &[ev("heavy", 2_000, 0.95)]).await;
    wait_processed(&[&running], sent + 1).await;
    let heavy_view = running
        .shared
        .lock()
        .model_view("demo/heavy")
        .expect("heavy");
    assert!(heavy_view.counters.events_applied < heavy.len() as u64);
    let dead = read_topic(&kafka.bootstrap, &kafka.dlq);
    let kinds: Vec<String> = dead
        .iter()
        .filter_map(|m| header(m, dlq_headers::ERROR_KIND))
        .collect();
    assert!(kinds.contains(&"too_large".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"invalid".to_owned()), "{kinds:?}");
    let cut = dead
        .iter()
        .find(|m| header(m, dlq_headers::ERROR_KIND).as_deref() == Some("too_large"))
        .expect("cut dead letter");
    assert!(cut
        .payload()
        .is_some_and(|p| p.len() <= 16 * 1024 && p[0] == b'#'));
    assert_eq!(
        header(cut, dlq_headers::ORIGINAL_VALUE_BYTES).as_deref(),
        Some("300000")
    );
    assert_eq!(
        header(cut, dlq_headers::SOURCE_OFFSET).as_deref(),
        Some("0")
    );
    stop(running).await;

    // A restart restores and carries on; nothing is read again in a loop.
    let (_, restarted) = start_with(&kafka, "poison", edit).await;
    wait_until("restored", || restarted.shared.lock().ready()).await;
    produce_to_one_partition(&kafka, &producer, &[ev("after", 2_001, 0.95)]).await;
    wait_processed(&[&restarted], 1).await;
    assert_eq!(counter(&restarted, "records_dead_lettered_total"), 0);
    stop(restarted).await;
}
