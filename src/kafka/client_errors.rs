//! Errors the Kafka clients report on their own (authentication and TLS
//! failures, brokers down): logged, counted by librdkafka error code, and
//! the latest one kept, so that `/readyz` and a failed start can say why
//! Kafka is out of reach instead of only that it is.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::telemetry::Metrics;

/// How long an error that says why outranks "all brokers down".
const CAUSE_KEPT: Duration = Duration::from_secs(60);

/// The Kafka client errors of one instance.
pub struct ClientErrors {
    metrics: Arc<Metrics>,
    /// The message, when, and whether it says why (not only that brokers
    /// are down).
    last: Mutex<Option<(String, Instant, bool)>>,
}

impl ClientErrors {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ClientErrors {
            metrics,
            last: Mutex::new(None),
        }
    }

    /// Logs, counts and keeps one error.
    pub fn record(&self, error: &KafkaError, reason: &str) {
        tracing::error!(error = %error, reason, "kafka client error");
        let code = error
            .rdkafka_error_code()
            .map_or_else(|| "Other".to_owned(), |code| format!("{code:?}"));
        self.metrics
            .kafka_client_errors
            .with_label_values(&[code.as_str()])
            .inc();
        let message = if reason.is_empty() {
            error.to_string()
        } else {
            format!("{error}: {reason}")
        };
        let consequence = error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown);
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        // "All brokers down" follows every failed connection: it must not
        // hide the recent error that says why (authentication, TLS).
        let keep_cause = consequence
            && last
                .as_ref()
                .is_some_and(|(_, at, cause)| *cause && at.elapsed() <= CAUSE_KEPT);
        if !keep_cause {
            *last = Some((message, Instant::now(), !consequence));
        }
    }

    /// The latest error, if it is at most `within` old.
    pub fn recent(&self, within: Duration) -> Option<String> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(_, at, _)| at.elapsed() <= within)
            .map(|(message, _, _)| message.clone())
    }
}

/// A client context that reports errors to [`ClientErrors`]: the producer's.
/// Its background thread delivers errors even while nothing else polls,
/// during start-up included.
#[derive(Clone)]
pub struct ReportingContext(pub Arc<ClientErrors>);

impl ClientContext for ReportingContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.0.record(&error, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_counted_by_code_and_the_latest_cause_is_kept_while_recent() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let errors = ClientErrors::new(Arc::clone(&metrics));
        assert_eq!(errors.recent(Duration::from_secs(60)), None);
        errors.record(
            &KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL SCRAM authentication failed",
        );
        errors.record(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown), "");
        let last = errors.recent(Duration::from_secs(60)).expect("recent");
        assert!(last.contains("SASL SCRAM authentication failed"), "{last}");
        errors.record(
            &KafkaError::Global(RDKafkaErrorCode::SSL),
            "certificate verify failed",
        );
        let count = |code: &str| metrics.kafka_client_errors.with_label_values(&[code]).get();
        assert_eq!(count("Authentication"), 1);
        assert_eq!(count("AllBrokersDown"), 1);
        assert_eq!(count("SSL"), 1);
        assert_eq!(count("BrokerTransportFailure"), 0);
        let last = errors.recent(Duration::from_secs(60)).expect("recent");
        assert!(last.contains("certificate verify failed"), "{last}");
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(errors.recent(Duration::from_millis(10)), None);
    }
}
