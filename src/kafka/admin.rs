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
    topics.push(k.changelog_topic.clone());
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

/// Makes sure the changelog topic exists with at least as many partitions
/// as any input topic (it is co-partitioned with the input: state of input
/// partition p lives in changelog partition p). A missing changelog is
/// created, compacted; one with too few partitions is an error that says
/// what to do.
pub fn check_changelog<C: rdkafka::consumer::ConsumerContext>(
    config: &Config,
    consumer: &rdkafka::consumer::BaseConsumer<C>,
) -> Result<(), PipelineError> {
    use rdkafka::consumer::Consumer;
    let timeout = Duration::from_secs(30);
    let metadata = consumer.fetch_metadata(None, timeout)?;
    let partitions = |name: &str| {
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
            .map(|t| t.partitions().len())
    };
    let inputs: Vec<(String, usize)> = metadata
        .topics()
        .iter()
        .filter(|t| match &config.kafka.input {
            InputTopics::List(list) => list.iter().any(|n| n == t.name()),
            InputTopics::Pattern(_) => false,
        })
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    let needed = inputs
        .iter()
        .map(|(_, n)| *n)
        .max()
        .unwrap_or(config.kafka.topic_partitions.max(1) as usize);
    let changelog = &config.kafka.changelog_topic;
    match partitions(changelog) {
        Some(have) if have >= needed => Ok(()),
        Some(have) => Err(PipelineError::Topics(format!(
            "changelog topic {changelog} has {have} partitions but input topic(s) {inputs:?} need {needed}: \
             recreate it (compacted) with {needed} partitions, or set kafka.changelog_topic to a new name"
        ))),
        None => {
            tracing::info!(topic = %changelog, partitions = needed, "creating the changelog topic (compacted)");
            let admin: AdminClient<DefaultClientContext> = client::base(&config.kafka).create()?;
            let topic = NewTopic::new(
                changelog,
                i32::try_from(needed).unwrap_or(i32::MAX),
                TopicReplication::Fixed(config.kafka.topic_replication),
            )
            .set("cleanup.policy", "compact");
            let opts = AdminOptions::new().operation_timeout(Some(timeout));
            for result in futures::executor::block_on(admin.create_topics([&topic], &opts))? {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(PipelineError::Topics(format!("creating changelog topic {name}: {code}")))
                    }
                }
            }
            Ok(())
        }
    }
}
