//! Interoperability with clients no one here wrote: Apache Kafka's own
//! console producer (from the `kafka-tools` jar) feeds JSON telemetry in,
//! keyed by lineage, and its console consumer with
//! `--isolation-level read_committed` reads the retrain requests out; they
//! are exactly what `replay` of the same events gives.
//!
//! Needs the real broker (scripts/test.sh starts Apache Kafka) and the Kafka
//! jars scripts/test.sh fetches; without them the test fails, it never skips.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use driftwatch::model::RetrainRequest;

const CONSOLE_PRODUCER: &str = "org.apache.kafka.tools.ConsoleProducer";
const CONSOLE_CONSUMER: &str = "org.apache.kafka.tools.consumer.ConsoleConsumer";

/// `scripts/kafka-broker.sh run CLASS ARGS...`: a Kafka tool from the jars.
fn kafka_tool(class: &str, args: &[&str]) -> Command {
    let mut command = Command::new("bash");
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka-broker.sh"))
        .arg("run")
        .arg(class)
        .args(args);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_producer_feeds_and_the_console_consumer_reads_committed() {
    let kafka = common::real_broker().await;
    let config = common::config(&kafka, "console");
    let events = common::simulated(6, 3, 240, 11);
    let expected = common::oracle(&config, &events);
    assert!(
        expected.len() >= 3,
        "the stream must cause requests: {}",
        expected.len()
    );
    let running = common::start(config).await;

    // One line per event: the lineage, a tab, the event as JSON.
    let mut lines = String::new();
    for event in &events {
        let json = serde_json::to_string(event).expect("json");
        lines.push_str(&format!("{}\t{json}\n", event.model.lineage()));
    }
    let mut producer = kafka_tool(
        CONSOLE_PRODUCER,
        &[
            "--bootstrap-server",
            &kafka.bootstrap,
            "--topic",
            &kafka.metrics,
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=\t",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("console producer");
    producer
        .stdin
        .take()
        .expect("stdin")
        .write_all(lines.as_bytes())
        .expect("feed the console producer");
    let produced = producer.wait_with_output().expect("console producer");
    assert!(
        produced.status.success(),
        "console producer: {}\n{}",
        produced.status,
        String::from_utf8_lossy(&produced.stderr)
    );
    common::wait_processed(&[&running], events.len()).await;
    assert_eq!(
        common::counter(&running, "records_applied_total"),
        events.len() as u64,
        "every line the console producer sent was applied"
    );

    let max = expected.len().to_string();
    let group = kafka.group("console-consumer");
    let consumed = kafka_tool(
        CONSOLE_CONSUMER,
        &[
            "--bootstrap-server",
            &kafka.bootstrap,
            "--topic",
            &kafka.requests,
            "--group",
            &group,
            "--from-beginning",
            "--isolation-level",
            "read_committed",
            "--max-messages",
            &max,
            "--timeout-ms",
            "60000",
        ],
    )
    .stdin(Stdio::null())
    .output()
    .expect("console consumer");
    assert!(
        consumed.status.success(),
        "console consumer: {}\n{}",
        consumed.status,
        String::from_utf8_lossy(&consumed.stderr)
    );
    let requests: Vec<RetrainRequest> = String::from_utf8_lossy(&consumed.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("request json {l:?}: {e}")))
        .collect();
    common::assert_exactly_once(requests, &expected);
    // And nothing beyond them is committed on the topic.
    assert_eq!(common::read_requests(&kafka), common::sorted(expected));
    common::stop(running).await;
}
