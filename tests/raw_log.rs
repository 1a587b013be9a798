//! The raw-log reader (tests/common/raw_log.rs) against a real broker:
//! records of aborted transactions, including one left open by a producer
//! that died and was fenced by its successor, are not returned; the markers
//! are in the log where a client cannot see them; and the client's own
//! `read_committed` (the broker's list of aborted transactions) reads the
//! same records the markers keep.

mod common;

use std::time::Duration;

use common::raw_log::{self, ControlType};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TIMEOUT: Duration = Duration::from_secs(30);

fn transactional_producer(bootstrap: &str, transactional_id: &str) -> BaseProducer {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", transactional_id)
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(TIMEOUT)
        .expect("init transactions");
    producer
}

fn send(producer: &BaseProducer, topic: &str, value: &str) {
    producer
        .send(BaseRecord::to(topic).key("k").payload(value))
        .map_err(|(e, _)| e)
        .expect("enqueue");
}

fn text(value: Option<&[u8]>) -> String {
    String::from_utf8_lossy(value.expect("a value")).into_owned()
}

#[test]
fn aborted_and_fenced_transactions_are_not_read() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let kafka = runtime.block_on(common::real_broker());
    let bootstrap = kafka.bootstrap.as_str();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let unique = format!("{}-{nanos}", std::process::id());
    let topic = format!("raw-log-{unique}");
    runtime.block_on(common::create_topics(bootstrap, &[(&topic, 1)]));
    let transactional_id = format!("raw-log-txn-{unique}");

    let producer = transactional_producer(bootstrap, &transactional_id);
    producer.begin_transaction().expect("begin 1");
    send(&producer, &topic, "committed-1");
    producer.commit_transaction(TIMEOUT).expect("commit 1");

    producer.begin_transaction().expect("begin 2");
    send(&producer, &topic, "aborted");
    producer.flush(TIMEOUT).expect("flush 2");
    producer.abort_transaction(TIMEOUT).expect("abort 2");

    producer.begin_transaction().expect("begin 3");
    send(&producer, &topic, "open-when-killed");
    producer.flush(TIMEOUT).expect("flush 3");
    // A kill: the transaction is neither committed nor aborted by its
    // producer.
    std::mem::forget(producer);

    // Its successor fences it, which aborts the open transaction.
    let successor = transactional_producer(bootstrap, &transactional_id);
    successor.begin_transaction().expect("begin 4");
    send(&successor, &topic, "committed-2");
    successor.commit_transaction(TIMEOUT).expect("commit 4");

    let log = raw_log::read_raw(bootstrap, &topic);
    println!(
        "Fetch v{}, Metadata v{}, high watermarks {:?}",
        log.fetch_version, log.metadata_version, log.high_watermarks
    );
    for r in &log.records {
        let what = match r.control_type() {
            Some(control) => format!("{control:?} marker"),
            None => text(r.value.as_deref()),
        };
        println!(
            "  {}/{} producer {} epoch {} transactional={} {what}",
            r.partition, r.offset, r.producer_id, r.producer_epoch, r.transactional
        );
    }
    let everything: Vec<String> = log
        .records
        .iter()
        .filter(|r| !r.control)
        .map(|r| text(r.value.as_deref()))
        .collect();
    assert_eq!(
        everything,
        ["committed-1", "aborted", "open-when-killed", "committed-2"],
        "read_uncommitted sees every record"
    );
    // The successor's init_transactions aborts the open transaction with a
    // marker of its own.
    let markers: Vec<ControlType> = log
        .records
        .iter()
        .filter_map(|r| r.control_type())
        .collect();
    assert_eq!(
        markers,
        [
            ControlType::Commit,
            ControlType::Abort,
            ControlType::Abort,
            ControlType::Commit
        ],
        "transaction markers"
    );

    let (committed, stats) = raw_log::read_committed_with_stats(bootstrap, &topic);
    println!("stats: {stats:?}");
    let values: Vec<String> = committed.iter().map(|r| text(r.value.as_deref())).collect();
    assert_eq!(values, ["committed-1", "committed-2"], "read_committed");
    assert_eq!(
        raw_log::read_committed_raw(bootstrap, &topic),
        committed,
        "read_committed_raw"
    );
    assert_eq!(
        (stats.committed, stats.aborted, stats.undecided),
        (2, 2, 0),
        "kept, aborted, undecided"
    );
    assert!(committed
        .iter()
        .all(|r| r.key.as_deref() == Some(&b"k"[..])));
    let client: Vec<String> = common::read_topic(bootstrap, &topic)
        .iter()
        .map(|m| text(rdkafka::Message::payload(m)))
        .collect();
    assert_eq!(client, values, "the client's read_committed");
}
