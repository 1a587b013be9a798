//! The Kafka shell around the pure engine: consumer group, rebalances,
//! outputs, dead letters, offsets, status feedback, admin.

pub mod admin;
pub mod client;
pub mod client_errors;
pub mod context;
pub mod heartbeat;
pub mod outputs;
pub mod phase;
pub mod pipeline;
pub mod readiness;
pub mod restore;
pub mod shell;
pub mod step;
#[cfg(test)]
mod step_tests;

/// Errors that stop the pipeline. The process exits non-zero so that an
/// orchestrator restarts it; offsets of unfinished work were not stored, so
/// nothing is lost.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("codec setup: {0}")]
    Codec(#[from] crate::codec::CodecError),
    #[error("producing to {topic} failed: {error}")]
    Delivery { topic: String, error: String },
    #[error("encoding a retrain request failed: {0}")]
    Encode(#[from] crate::codec::EncodeError),
    #[error("record {topic}/{partition}@{offset} could not be decoded for an environmental reason (will be retried after restart): {error}")]
    Transient {
        topic: String,
        partition: i32,
        offset: i64,
        error: String,
    },
    #[error("topic setup: {0}")]
    Topics(String),
    /// A start-up call to Kafka failed, and the clients had reported why.
    #[error("kafka client: {error} (the client last reported: {last})")]
    Unreachable {
        error: rdkafka::error::KafkaError,
        last: String,
    },
}
