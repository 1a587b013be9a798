//! Domain types shared by every part of driftwatch: the telemetry that model
//! servers publish, the retrain requests driftwatch emits, and the statuses a
//! coordinator reports back. Their wire contracts live in `schemas/*.avsc`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub mod borrowed;

pub use borrowed::{MetricEventRef, ModelRefView, Text};

/// The metric name under which an event's inference error counts: 1.0 when the
/// event carries an error message, 0.0 otherwise. A rule on this metric with
/// the `mean` or `rate` aggregate watches the model's error rate.
pub const INFERENCE_ERROR_METRIC: &str = "inference_error";

/// Latest accepted event time: 9999-12-31T23:59:59.999Z. Keeps window
/// arithmetic far from overflow.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Longest project, name or version accepted, in bytes: they enter the
/// model's state, its snapshot and its changelog key.
pub const MAX_ID_BYTES: usize = 256;
/// Most metrics one event may carry.
pub const MAX_METRICS: usize = 256;
/// Most tags one event may carry.
pub const MAX_TAGS: usize = 64;
/// Longest metric name, tag key or tag value accepted, in bytes.
pub const MAX_LABEL_BYTES: usize = 1_024;

/// Well-known metric names. Any other name is a custom metric and equally valid.
pub const WELL_KNOWN_METRICS: &[&str] = &[
    "accuracy",
    "precision",
    "recall",
    "f1_score",
    "latency_ms",
    "fps",
    "drift_score",
    "drift_p_value",
    "error_rate",
    INFERENCE_ERROR_METRIC,
];

/// A model deployment: its lineage (`project/name`) plus the serving version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    pub project: String,
    pub name: String,
    /// Version being served; `None` when the producer does not know it.
    #[serde(default)]
    pub version: Option<String>,
}

impl ModelRef {
    pub fn new(project: &str, name: &str, version: Option<&str>) -> Self {
        ModelRef {
            project: project.to_owned(),
            name: name.to_owned(),
            version: version.map(str::to_owned),
        }
    }

    /// The lineage `project/name`: the Kafka record key and the unit of state.
    pub fn lineage(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}/{}@{}", self.project, self.name, v),
            None => write!(f, "{}/{}", self.project, self.name),
        }
    }
}

/// One telemetry record from a model server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEvent {
    pub model: ModelRef,
    /// Event time in milliseconds since the Unix epoch. Windows, cooldowns
    /// and timeouts are computed from this, never from the wall clock.
    pub timestamp: i64,
    /// Named metric values (well-known or custom).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Inference error message, if the request behind this event failed.
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Why an event was rejected before reaching the engine.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidEvent {
    #[error("model.project is empty")]
    EmptyProject,
    #[error("model.name is empty")]
    EmptyName,
    #[error("model lineage must not contain '/' inside project or name: {0:?}")]
    SlashInLineage(String),
    #[error("{field} is {len} bytes long; at most {max} are accepted")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("event carries {count} {what}; at most {max} are accepted")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("timestamp {0} is negative")]
    NegativeTimestamp(i64),
    #[error("timestamp {0} is after the year 9999 (milliseconds expected)")]
    FarFutureTimestamp(i64),
    #[error("metric {name:?} is not a finite number ({value})")]
    NonFiniteMetric { name: String, value: f64 },
    #[error("event carries neither metrics nor an error")]
    Empty,
}

/// What the engine and the validation read of an event, whether it owns
/// its strings ([`MetricEvent`]) or borrows them from the record it was
/// decoded from ([`MetricEventRef`], the pipeline's hot path). Both give
/// the same answers for the same event, so the engine decides the same.
pub trait EventView {
    fn project(&self) -> &str;
    fn name(&self) -> &str;
    fn version(&self) -> Option<&str>;
    /// Event time in milliseconds since the Unix epoch.
    fn timestamp(&self) -> i64;
    /// The event carries an inference error message.
    fn has_error(&self) -> bool;
    /// The value of a metric the event carries (not the derived
    /// [`INFERENCE_ERROR_METRIC`]; see [`EventView::value`]).
    fn metric(&self, name: &str) -> Option<f64>;
    /// The metrics, by name, each name once.
    fn metrics(&self) -> impl Iterator<Item = (&str, f64)>;
    fn metric_count(&self) -> usize;
    /// The tags, by key, each key once.
    fn tags(&self) -> impl Iterator<Item = (&str, &str)>;
    fn tag_count(&self) -> usize;

    /// The lineage `project/name`: the Kafka record key and the unit of state.
    fn lineage(&self) -> String {
        let mut lineage = String::new();
        self.write_lineage(&mut lineage);
        lineage
    }

    /// Writes the lineage into `out` (cleared first): a reused buffer
    /// makes it without an allocation.
    fn write_lineage(&self, out: &mut String) {
        out.clear();
        out.push_str(self.project());
        out.push('/');
        out.push_str(self.name());
    }

    /// The value of `metric` carried by this event, including the derived
    /// [`INFERENCE_ERROR_METRIC`].
    fn value(&self, metric: &str) -> Option<f64> {
        if metric == INFERENCE_ERROR_METRIC {
            return Some(if self.has_error() { 1.0 } else { 0.0 });
        }
        self.metric(metric)
    }

    /// Checks what the schema cannot express. Invalid events go to the DLQ.
    fn validate(&self) -> Result<(), InvalidEvent> {
        validate(self)
    }
}

fn validate<E: EventView + ?Sized>(event: &E) -> Result<(), InvalidEvent> {
    if event.project().trim().is_empty() {
        return Err(InvalidEvent::EmptyProject);
    }
    if event.name().trim().is_empty() {
        return Err(InvalidEvent::EmptyName);
    }
    for (field, value) in [
        ("model.project", event.project()),
        ("model.name", event.name()),
        ("model.version", event.version().unwrap_or("")),
    ] {
        if value.len() > MAX_ID_BYTES {
            return Err(InvalidEvent::TooLong {
                field,
                len: value.len(),
                max: MAX_ID_BYTES,
            });
        }
    }
    for part in [event.project(), event.name()] {
        // A byte scan: '/' is ASCII, and no byte of a multi-byte UTF-8
        // character is below 0x80, so this finds exactly the '/'
        // characters (cheaper than a `char` search on short names).
        if part.bytes().any(|b| b == b'/') {
            return Err(InvalidEvent::SlashInLineage(part.to_owned()));
        }
    }
    if event.metric_count() > MAX_METRICS {
        return Err(InvalidEvent::TooMany {
            what: "metrics",
            count: event.metric_count(),
            max: MAX_METRICS,
        });
    }
    if event.tag_count() > MAX_TAGS {
        return Err(InvalidEvent::TooMany {
            what: "tags",
            count: event.tag_count(),
            max: MAX_TAGS,
        });
    }
    let too_long = |field, len| InvalidEvent::TooLong {
        field,
        len,
        max: MAX_LABEL_BYTES,
    };
    if let Some((k, _)) = event.metrics().find(|(k, _)| k.len() > MAX_LABEL_BYTES) {
        return Err(too_long("metric name", k.len()));
    }
    if let Some((k, _)) = event.tags().find(|(k, _)| k.len() > MAX_LABEL_BYTES) {
        return Err(too_long("tag key", k.len()));
    }
    if let Some((_, v)) = event.tags().find(|(_, v)| v.len() > MAX_LABEL_BYTES) {
        return Err(too_long("tag value", v.len()));
    }
    let timestamp = event.timestamp();
    if timestamp < 0 {
        return Err(InvalidEvent::NegativeTimestamp(timestamp));
    }
    if timestamp > MAX_TIMESTAMP_MS {
        return Err(InvalidEvent::FarFutureTimestamp(timestamp));
    }
    if let Some((name, value)) = event.metrics().find(|(_, v)| !v.is_finite()) {
        return Err(InvalidEvent::NonFiniteMetric {
            name: name.to_owned(),
            value,
        });
    }
    if event.metric_count() == 0 && !event.has_error() {
        return Err(InvalidEvent::Empty);
    }
    Ok(())
}

impl MetricEvent {
    /// Checks what the schema cannot express. Invalid events go to the DLQ.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        validate(self)
    }

    /// The value of `metric` carried by this event, including the derived
    /// [`INFERENCE_ERROR_METRIC`].
    pub fn value(&self, metric: &str) -> Option<f64> {
        EventView::value(self, metric)
    }
}

impl EventView for MetricEvent {
    fn project(&self) -> &str {
        &self.model.project
    }
    fn name(&self) -> &str {
        &self.model.name
    }
    fn version(&self) -> Option<&str> {
        self.model.version.as_deref()
    }
    fn timestamp(&self) -> i64 {
        self.timestamp
    }
    fn has_error(&self) -> bool {
        self.error.is_some()
    }
    fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
    fn metrics(&self) -> impl Iterator<Item = (&str, f64)> {
        self.metrics.iter().map(|(k, v)| (k.as_str(), *v))
    }
    fn metric_count(&self) -> usize {
        self.metrics.len()
    }
    fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

/// What the coordinator should do. Ordered by strength: when several rules
/// fire at once, the strongest action wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "FINE_TUNE", alias = "fine_tune")]
    FineTune,
    #[serde(rename = "FULL_RETRAIN", alias = "full_retrain")]
    FullRetrain,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::FineTune => "FINE_TUNE",
            Action::FullRetrain => "FULL_RETRAIN",
        }
    }
}

/// A request for the coordinator to retrain a model, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainRequest {
    /// Deterministic: derived from the model, the firing rules and the event
    /// time, so that redelivery and replay give the same id.
    pub request_id: String,
    pub model: ModelRef,
    pub action: Action,
    /// The rule that decided the action (the strongest of those that fired).
    pub rule: String,
    pub detector: String,
    pub metric: String,
    pub observed: f64,
    pub threshold: f64,
    pub window_start: i64,
    pub window_end: i64,
    /// Event time at which the request was triggered (ms since epoch).
    pub triggered_at: i64,
    pub reason: String,
    #[serde(default)]
    pub evidence: BTreeMap<String, String>,
}

/// Lifecycle states a coordinator reports for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusKind {
    #[serde(rename = "ACCEPTED")]
    Accepted,
    #[serde(rename = "STARTED")]
    Started,
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    #[serde(rename = "FAILED")]
    Failed,
}

impl StatusKind {
    /// SUCCEEDED and FAILED end a request; the model may be requested again.
    pub fn is_terminal(self) -> bool {
        matches!(self, StatusKind::Succeeded | StatusKind::Failed)
    }
}

/// A coordinator's report on a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrainStatus {
    pub request_id: String,
    pub model: ModelRef,
    pub status: StatusKind,
    /// The version produced by a successful retrain, if any.
    #[serde(default)]
    pub new_version: Option<String>,
    pub timestamp: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> MetricEvent {
        MetricEvent {
            model: ModelRef::new("fraud", "scorer", Some("3")),
            timestamp: 1_700_000_000_000,
            metrics: BTreeMap::from([("accuracy".to_owned(), 0.9)]),
            error: None,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn lineage_is_project_slash_name() {
        assert_eq!(event().model.lineage(), "fraud/scorer");
    }

    #[test]
    fn validate_rejects_what_the_schema_allows_but_the_engine_cannot_use() {
        assert_eq!(event().validate(), Ok(()));
        let mut e = event();
        e.model.name = " ".into();
        assert_eq!(e.validate(), Err(InvalidEvent::EmptyName));
        let mut e = event();
        e.metrics.insert("latency_ms".into(), f64::NAN);
        assert!(matches!(
            e.validate(),
            Err(InvalidEvent::NonFiniteMetric { .. })
        ));
        let mut e = event();
        e.timestamp = -1;
        assert_eq!(e.validate(), Err(InvalidEvent::NegativeTimestamp(-1)));
        e.timestamp = i64::MAX - 1;
        assert_eq!(
            e.validate(),
            Err(InvalidEvent::FarFutureTimestamp(i64::MAX - 1))
        );
        let mut e = event();
        e.metrics.clear();
        assert_eq!(e.validate(), Err(InvalidEvent::Empty));
        e.error = Some("timeout".into());
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn inference_error_is_derived_from_the_error_message() {
        let mut e = event();
        assert_eq!(e.value(INFERENCE_ERROR_METRIC), Some(0.0));
        e.error = Some("oom".into());
        assert_eq!(e.value(INFERENCE_ERROR_METRIC), Some(1.0));
        assert_eq!(e.value("accuracy"), Some(0.9));
        assert_eq!(e.value("missing"), None);
    }

    #[test]
    fn stronger_action_orders_higher() {
        assert!(Action::FullRetrain > Action::FineTune);
    }
}
