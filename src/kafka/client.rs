//! librdkafka client configurations built from [`KafkaConfig`].

use rdkafka::ClientConfig;

use crate::config::{KafkaConfig, Processing};

/// Settings shared by every client: bootstrap servers, security (TLS,
/// SASL), then the pass-through properties, which win.
pub fn base(kafka: &KafkaConfig) -> ClientConfig {
    overlay(ClientConfig::new(), kafka)
}

/// The group consumer of the input topics. Offsets are stored explicitly
/// after a record's outputs are acknowledged, and committed in the
/// background or on revocation (at-least-once), or sent to the transaction
/// (exactly-once).
///
/// `fetch.queue.backoff.ms` is 20 ms instead of librdkafka's 1 s: once a
/// partition's local queue passes `queued.min.messages`, librdkafka waits
/// that long before fetching it again, and a pipeline that drains the
/// queue in a third of a second then sat idle for the rest (measured:
/// half the throughput of `driftwatch bench`; BENCHMARKS.md).
///
/// Exactly-once reads read_committed, as Kafka Streams does: aborted input
/// is never applied, and librdkafka then fetches committed offsets with
/// `require_stable` (KIP-447), waiting out a previous owner's transaction
/// that is still completing instead of starting from the offsets before it.
pub fn group_consumer(kafka: &KafkaConfig) -> ClientConfig {
    let isolation = match kafka.processing {
        Processing::ExactlyOnce => "read_committed",
        Processing::AtLeastOnce => "read_uncommitted",
    };
    let mut cfg = ClientConfig::new();
    cfg.set("group.id", &kafka.group_id)
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation)
        .set("fetch.queue.backoff.ms", "20")
        .set("statistics.interval.ms", "5000");
    overlay(cfg, kafka)
}

/// A consumer that reads every partition of the status topic, outside the
/// group, so that each instance sees the statuses of the models it owns.
pub fn status_consumer(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("group.id", format!("{}-status", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    overlay(cfg, kafka)
}

/// The consumer that reads changelog partitions back (never commits).
pub fn restore_consumer(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("group.id", format!("{}-restore", kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    overlay(cfg, kafka)
}

/// The producer of retrain requests and dead letters: idempotent, acks=all.
pub fn producer(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000");
    overlay(cfg, kafka)
}

/// Applies the base settings over role defaults (user properties win).
///
/// The values are set from `kafka` itself: `ClientConfig::config_map` hides
/// secrets behind a placeholder, so copying one client configuration into
/// another would send the placeholder as the password.
fn overlay(mut role: ClientConfig, kafka: &KafkaConfig) -> ClientConfig {
    role.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in kafka.security.properties() {
        role.set(key, value);
    }
    for (key, value) in &kafka.properties {
        role.set(key, value);
    }
    for (key, value) in &kafka.secret_properties {
        role.set(key, value.expose());
    }
    role
}
