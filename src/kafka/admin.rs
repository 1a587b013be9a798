//! Creation of missing topics through the admin API.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{client, PipelineError};
use crate::config::{Config, InputTopics};

/// The topics driftwatch reads or writes, as configured.
pub fn configured_topics(config: &Config) -> Vec<String> {
    let k = &config.kafka;
    let mut topics = match &k.input {
        InputTopics::List(list) => list.clone(),
        InputTopics::Pattern(_) => Vec::new(),
    };
    topics.push(k.output_topic.clone());
    topics.push(k.dlq_topic.clone());
    topics.extend(k.status_topic.clone());
    topics.sort();
    topics.dedup();
    topics
}

/// Creates any configured topic that does not exist yet, with
/// `kafka.topic_partitions` partitions. Existing topics are left alone.
pub async fn ensure_topics(config: &Config) -> Result<(), PipelineError> {
    let admin: AdminClient<DefaultClientContext> = client::base(&config.kafka).create()?;
    let names = configured_topics(config);
    let new_topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                config.kafka.topic_partitions,
                TopicReplication::Fixed(config.kafka.topic_replication),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &opts).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(PipelineError::Topics(format!(
                    "creating topic {name}: {code}"
                )));
            }
        }
    }
    Ok(())
}
