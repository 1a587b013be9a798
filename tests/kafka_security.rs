//! driftwatch against an Apache Kafka that demands SASL/SCRAM-SHA-512 over
//! mutual TLS (see `common::secure_broker`): the whole pipeline runs through
//! it exactly-once, and a wrong password, a broker certificate from an
//! untrusted CA and a client certificate the broker does not trust are each
//! refused with the reason on `/readyz`, in a metric, and in the exit error.

mod common;

use std::time::{Duration, Instant};

use common::instance::Instance;
use common::secure_broker::{SecureBroker, PASSWORD};
use common::{TestKafka, WAIT};
use driftwatch::config::Config;
use driftwatch::kafka::client;
use driftwatch::model::RetrainRequest;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;

/// A password the broker does not know.
const WRONG_PASSWORD: &str = "not-the-password";

/// The test configuration on `broker`, exactly-once, with `security`.
fn secure_toml(kafka: &TestKafka, group: &str, security: &str) -> String {
    let toml = common::config_toml(kafka, group);
    let toml = common::set_key(&toml, "processing", "\"exactly_once\"");
    toml.replace("[format]", &format!("{security}\n[format]"))
}

async fn broker_and_topics() -> (SecureBroker, TestKafka) {
    let mut kafka = common::unprovisioned_kafka("set below");
    let broker = SecureBroker::new(&kafka.topics_to_create()).await;
    kafka.bootstrap = broker.bootstrap();
    (broker, kafka)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_runs_over_sasl_scram_and_mutual_tls() {
    let (broker, kafka) = broker_and_topics().await;
    let security = broker.security_toml(PASSWORD, &broker.certs.ca);
    let config =
        Config::from_toml_str(&secure_toml(&kafka, "secure", &security)).expect("secure config");

    let running = common::start(config.clone()).await;
    // The test's own clients are built by driftwatch from the same settings.
    let producer: FutureProducer = client::producer(&config.kafka)
        .create()
        .expect("secure producer");
    let events = common::simulated(8, 3, 240, 7);
    common::produce_events(&kafka, &producer, &events, None).await;
    common::wait_processed(&[&running], events.len()).await;

    let expected = common::oracle(&config, &events);
    assert!(
        expected.len() >= 3,
        "the stream must cause requests: {}",
        expected.len()
    );
    let requests: Vec<RetrainRequest> =
        common::read_topic_with(client::base(&config.kafka), &kafka.requests)
            .iter()
            .map(|m| serde_json::from_slice(m.payload().expect("payload")).expect("request json"))
            .collect();
    common::assert_exactly_once(requests, &expected);
    assert_eq!(
        common::counter(&running, "records_applied_total"),
        events.len() as u64
    );
    common::stop(running).await;
}

/// Starts `driftwatch run` with `security`, waits until `/readyz` names the
/// failure (`reason`) and the metric counts it under `code`, then until the
/// process gives up with an error that names it too.
async fn refused(broker: &SecureBroker, name: &str, security: &str, code: &str, reason: &str) {
    let kafka = common::unprovisioned_kafka(&broker.bootstrap());
    let toml = secure_toml(&kafka, name, security);
    let mut instance = Instance::spawn(broker.dir(), name, &toml);
    let deadline = Instant::now() + WAIT;
    let body = loop {
        if let Some((status, body)) = instance.readyz().await {
            assert_eq!(status, 503, "{name} must not be ready: {body}");
            if body.contains(reason) {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: /readyz never named {reason:?}; log: {}",
            instance.log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("last Kafka client error"), "{body}");
    let metrics = instance.metrics_text().await;
    let counted = metrics
        .lines()
        .filter(|l| {
            l.starts_with("driftwatch_kafka_client_errors_total{")
                && l.contains(&format!("code=\"{code}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(counted >= 1.0, "{code} errors not counted:\n{metrics}");
    assert_eq!(instance.counter("records_consumed_total").await, 0);

    // The start-up metadata call gives up after 30 s; the process exits
    // non-zero (an orchestrator restarts it) and says why.
    let status = instance.wait_exit(Duration::from_secs(120));
    assert!(!status.success(), "{name} exited with {status}");
    let log = std::fs::read_to_string(&instance.log).expect("log");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("startup failed")
            && last.contains("the client last reported")
            && last.contains(reason),
        "the exit error must name the cause: {last}"
    );
    assert!(
        !log.contains(PASSWORD) && !log.contains(WRONG_PASSWORD),
        "a password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_and_the_reason_is_reported() {
    let (broker, _) = broker_and_topics().await;
    refused(
        &broker,
        "wrong-password",
        &broker.security_toml(WRONG_PASSWORD, &broker.certs.ca),
        "Authentication",
        "invalid credentials with SASL mechanism SCRAM-SHA-512",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_an_untrusted_ca_is_refused() {
    let (broker, _) = broker_and_topics().await;
    refused(
        &broker,
        "untrusted-ca",
        &broker.security_toml(PASSWORD, &broker.certs.other_ca),
        "SSL",
        "certificate verify failed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_broker_does_not_trust_is_refused() {
    let (broker, _) = broker_and_topics().await;
    let certs = &broker.certs;
    refused(
        &broker,
        "untrusted-client",
        &broker.security_toml_as(
            PASSWORD,
            &certs.ca,
            &certs.stranger_cert,
            &certs.stranger_key,
        ),
        "BrokerTransportFailure",
        "alert bad certificate",
    )
    .await;
}
