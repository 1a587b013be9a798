//! The broker is killed with SIGKILL mid-stream: an Apache Kafka of the
//! test's own (`common::kafka_broker`) is killed while telemetry flows
//! through `driftwatch run` (exactly-once), and started again on the same
//! ports and log directory. The service must ride it out without a restart
//! of its own (still running when the broker is back, exit 0 on SIGTERM at
//! the end), and the output topic, read committed, must be exactly what
//! `replay` of the input gives: nothing lost, no request id twice.
//!
//! It starts its own broker (`DRIFTWATCH_TEST_BOOTSTRAP` is not used).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::instance::{committed_offsets, try_committed_offsets, Instance};
use common::kafka_broker::{KafkaBroker, Listeners};
use common::raw_log::read_log_stats;
use common::*;
use driftwatch::config::Config;
use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

const MODELS: usize = 40;
const DRIFTING: usize = 30;
const TICKS: usize = 240;
const SEED: u64 = 17;
/// The broker is killed once the service has applied this many records (of
/// the first half's 4,800), so that the kill lands mid-stream.
const KILL_AT_APPLIED: u64 = 400;
/// driftwatch's transaction timeout, and so its delivery timeout
/// (`message.timeout.ms` follows it), in this test.
const TXN_TIMEOUT_MS: u64 = 4000;
/// How long the broker stays down before it is started again: longer than
/// the delivery timeout, so that the open transaction's deliveries always
/// time out during the outage and the producer must be aborted or replaced.
const DOWN_FOR: Duration = Duration::from_millis(TXN_TIMEOUT_MS + 2000);
/// How long the group may take to commit again, or to the end.
const SETTLE: Duration = Duration::from_secs(90);

/// A producer that rides out the broker's kill: idempotent (Kafka rebuilds
/// its producer state from the log, so a retry of a batch it stored but did
/// not acknowledge is dropped, not stored twice), with a delivery timeout
/// far beyond the outage and quick reconnects.
fn patient_producer(kafka: &TestKafka) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "180000")
        .set("reconnect.backoff.max.ms", "500")
        .create()
        .expect("producer")
}

/// The WARN and ERROR lines of a log (ANSI colours removed), each kind of
/// message once with its count (digits replaced by `#`).
fn warnings(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let ansi = regex::Regex::new("\x1b\\[[0-9;]*m").expect("regex");
    let digits = regex::Regex::new("[0-9]+").expect("regex");
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for line in text.lines().map(|l| ansi.replace_all(l, "").into_owned()) {
        if !(line.contains(" WARN ") || line.contains(" ERROR ")) {
            continue;
        }
        let message = line.split_once(' ').map_or(line.as_str(), |(_, m)| m);
        let kind = digits.replace_all(message.trim(), "#").into_owned();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    kinds
        .iter()
        .map(|(kind, n)| format!("  {n:>3} x {kind}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the group's committed offsets sum beyond `after`.
async fn wait_commit_beyond(kafka: &TestKafka, group: &str, after: i64, log: &Path) -> Instant {
    let deadline = Instant::now() + SETTLE;
    loop {
        // The broker may not answer yet while it starts again.
        let now: i64 = try_committed_offsets(kafka, group)
            .map(|c| c.iter().flatten().sum())
            .unwrap_or(after);
        if now > after {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "nothing committed in {SETTLE:?} after the broker came back; log: {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_rides_out_a_sigkill_of_the_broker() {
    let began = Instant::now();
    let mut broker = KafkaBroker::new(Listeners::default()).await;
    eprintln!(
        "broker {} up after {:?}; its directory {}",
        broker.bootstrap(),
        began.elapsed(),
        broker.dir().display()
    );
    let kafka = real_kafka(&broker.bootstrap()).await;
    let group_name = "broker-kill";
    let toml = config_toml(&kafka, group_name);
    let toml = set_key(&toml, "processing", "\"exactly_once\"");
    let toml = set_key(&toml, "request_timeout", "\"1h\"");
    let toml = set_key(
        &toml,
        "properties",
        &format!(
            "{{ \"session.timeout.ms\" = \"6000\", \"transaction.timeout.ms\" = \"{TXN_TIMEOUT_MS}\" }}"
        ),
    );
    assert!(toml.contains("transaction.timeout.ms"), "{toml}");
    let config = Config::from_toml_str(&toml).expect("config");
    let events = simulated(MODELS, DRIFTING, TICKS, SEED);
    let expected = oracle(&config, &events);
    assert!(
        expected.len() >= 50,
        "the stream should give many requests, got {}",
        expected.len()
    );

    let mut instance = Instance::spawn(broker.dir(), "driftwatch", &toml);
    instance.wait_ready().await;
    let log = instance.log.clone();
    let producer = patient_producer(&kafka);
    let group = kafka.group(group_name);
    let (first, rest) = events.split_at(events.len() / 2);

    // The first half flows on while the broker is killed and started again:
    // what is sent during the outage waits in the producer's queue.
    let flowed = AtomicBool::new(false);
    let flow = async {
        for chunk in first.chunks(MODELS) {
            produce_events(&kafka, &producer, chunk, None).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        flowed.store(true, Ordering::SeqCst);
        Instant::now()
    };
    let kill = async {
        let started = Instant::now();
        let applied = loop {
            let applied = instance.counter("records_applied_total").await;
            if applied >= KILL_AT_APPLIED {
                break applied;
            }
            assert!(
                started.elapsed() < SETTLE,
                "only {applied} records applied in {SETTLE:?}; log: {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(
            !flowed.load(Ordering::SeqCst),
            "the first half was produced before the kill: the kill must land mid-stream"
        );
        let committed: i64 = committed_offsets(&kafka, &group).iter().flatten().sum();
        let killed = Instant::now();
        broker.kill();
        tokio::time::sleep(DOWN_FOR).await;
        broker.start().await;
        let back = Instant::now();
        let resumed = wait_commit_beyond(&kafka, &group, committed, &log).await;
        (applied, committed, killed, back, resumed)
    };
    let (flowed_until, (applied_before_kill, committed_before_kill, killed, back, resumed)) =
        tokio::join!(flow, kill);
    assert!(flowed_until > killed, "the kill must land mid-stream");
    assert!(
        instance.running(),
        "driftwatch exited while the broker was down; log: {}",
        log.display()
    );
    eprintln!(
        "SIGKILL to the broker with {applied_before_kill} of {} records applied and \
         {committed_before_kill} committed; down {:?} (kill to started); first commit {:?} \
         after it was back",
        first.len(),
        back - killed,
        resumed - back,
    );

    produce_paced(
        &kafka,
        &producer,
        rest,
        MODELS * 8,
        Duration::from_millis(5),
    )
    .await;
    let ends = end_offsets(&kafka.bootstrap, &kafka.metrics);
    assert_eq!(
        ends.values().sum::<i64>() as usize,
        events.len(),
        "the input topic should hold every event exactly once"
    );
    let produced_all = Instant::now();
    let deadline = produced_all + SETTLE;
    loop {
        let committed = try_committed_offsets(&kafka, &group);
        let done = committed.as_ref().is_ok_and(|committed| {
            (0..METRIC_PARTITIONS).all(|p| {
                let end = ends.get(&p).copied().unwrap_or(0);
                end == 0 || committed[p as usize] == Some(end)
            })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not commit to the end in {SETTLE:?}: committed {committed:?}, \
             ends {ends:?}; log {}, its warnings and errors:\n{}",
            log.display(),
            warnings(&log)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "all committed {:?} after the last event was produced; producers replaced: {}; \
         transactions: {:?}; the instance's warnings and errors:\n{}",
        produced_all.elapsed(),
        instance.counter("producer_renewals_total").await,
        instance
            .metrics_text()
            .await
            .lines()
            .filter(|l| l.starts_with("driftwatch_transactions_total"))
            .collect::<Vec<_>>(),
        warnings(&log)
    );
    let status = instance.terminate();
    assert!(
        status.success(),
        "exit status {status}; log: {}",
        log.display()
    );

    eprintln!(
        "output topic, as its markers tell: {:?}",
        read_log_stats(&kafka.bootstrap, &kafka.requests)
    );
    let output = read_requests(&kafka);
    let mut ids: Vec<&str> = output.iter().map(|r| r.request_id.as_str()).collect();
    ids.dedup();
    assert_eq!(output.len(), ids.len(), "a request id appears twice");
    let have: BTreeSet<&str> = ids.into_iter().collect();
    let want: BTreeSet<&str> = expected.iter().map(|r| r.request_id.as_str()).collect();
    let missing: Vec<&&str> = want.difference(&have).collect();
    let extra: Vec<&&str> = have.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} requests missing, {} not in the oracle; missing {missing:?}, extra {extra:?}",
        missing.len(),
        extra.len()
    );
    assert_eq!(output, expected);
    eprintln!(
        "{} requests, as the oracle; test took {:?}",
        expected.len(),
        began.elapsed()
    );
}
