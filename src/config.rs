//! Layered configuration: a TOML file, then `DRIFTWATCH_<SECTION>__<KEY>`
//! environment variables, then explicit overrides from CLI flags (highest
//! precedence). The merged result is validated and compiled into typed values,
//! including the engine's [`PolicySet`].
//!
//! Every error names the offending key as a dotted path with indices, such as
//! `policy[0].rule[1].detector.below`, and says what is wrong with it.
//! `config/example.toml` documents every key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Tag, Value};
use figment::Figment;
use regex::Regex;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

mod detector;
mod security;

pub use security::{is_secret_property, Protocol, Sasl, Secret, Security, Tls};

use crate::codec::FormatConfig;
use crate::engine::alert::MAX_CONFIRM_WINDOWS;
use crate::engine::policy::{
    Aggregate, AlertSpec, Combine, CompositeSpec, Policy, PolicySet, RuleSpec, SilenceSpec,
    WindowSpec,
};
use crate::model::Action;

/// Prefix of the environment variables read by [`Config::load`]. Nesting is
/// written with a double underscore: `DRIFTWATCH_KAFKA__GROUP_ID`.
pub const ENV_PREFIX: &str = "DRIFTWATCH_";

/// The validated, compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka: KafkaConfig,
    /// Default format of input records (`[format]`).
    pub input_format: FormatConfig,
    /// Per-topic input formats (`[format.topics."name"]`).
    pub topic_formats: BTreeMap<String, FormatConfig>,
    /// Format of the retrain requests driftwatch produces.
    pub output_format: FormatConfig,
    /// Format of the statuses read from the status topic.
    pub status_format: FormatConfig,
    pub http: HttpConfig,
    pub engine: EngineConfig,
    pub policies: PolicySet,
}

/// Kafka connection and topic settings (`[kafka]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub input: InputTopics,
    pub output_topic: String,
    /// Topic carrying retrain statuses from the coordinator; `None` disables
    /// status feedback.
    pub status_topic: Option<String>,
    pub dlq_topic: String,
    /// Create missing topics through the admin API at startup.
    pub create_topics: bool,
    pub topic_partitions: i32,
    pub topic_replication: i32,
    /// Pass-through librdkafka properties.
    pub properties: BTreeMap<String, String>,
    /// Pass-through properties whose values are secrets (passwords, keys):
    /// never printed.
    pub secret_properties: BTreeMap<String, Secret>,
    /// TLS and SASL (`[kafka.security]`).
    pub security: Security,
    /// Delivery guarantee of the pipeline.
    pub processing: Processing,
    /// How often a transaction is committed (exactly-once) or offsets are
    /// stored (at-least-once), in ms.
    pub commit_interval_ms: u64,
    /// Compacted topic holding model state snapshots.
    pub changelog_topic: String,
    /// Stable identity of this instance (its transactional id is
    /// `<group_id>-<instance_id>`); a restarted instance with the same id
    /// fences its predecessor's open transaction.
    pub instance_id: String,
}

/// Delivery guarantee (`kafka.processing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processing {
    /// Requests, state snapshots and consumed offsets commit in one transaction.
    ExactlyOnce,
    /// Offsets are stored after outputs are acknowledged; duplicates share ids.
    AtLeastOnce,
}

/// Which topics to consume telemetry from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputTopics {
    /// A fixed list of topic names.
    List(Vec<String>),
    /// A librdkafka subscription regex; always starts with `^`.
    Pattern(String),
}

/// HTTP endpoint settings (`[http]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// Engine limits and defaults (`[engine]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Upper bound on tracked models per partition.
    pub max_models_per_partition: usize,
    /// Default event time an unresolved request blocks new ones, in ms.
    pub request_timeout_ms: i64,
    /// Default event time after a FAILED request before a new one, in ms.
    pub failed_backoff_ms: i64,
    /// How far behind its partition's stream time an event may be, in ms.
    pub allowed_lateness_ms: i64,
    /// What happens to events later than that.
    pub late_events: LatePolicy,
    /// How far ahead of the record's timestamp (or, without one, the
    /// partition's stream time) an event's time may be, in ms; 0: no guard.
    pub max_clock_skew_ms: i64,
    /// What happens to events beyond that (`engine.future_events`).
    pub future_events: LatePolicy,
    /// Event time without an event before a model's state is removed, in
    /// ms; 0: never.
    pub idle_timeout_ms: i64,
}

/// What happens to an event behind its partition's watermark
/// (`engine.late_events`) or too far ahead (`engine.future_events`). Both
/// are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatePolicy {
    /// To the dead-letter topic, with the watermark in the reason.
    DeadLetter,
    /// Dropped.
    Drop,
}

/// A configuration problem: the dotted key it concerns and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// Dotted path with indices, e.g. `policy[0].rule[1].detector.below`.
    pub key: String,
    /// The problem, in words.
    pub problem: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// The sections of `new` that differ from this configuration and that
    /// a running service cannot apply in place (it applies `[[policy]]` and
    /// the `[engine]` limits live): they take effect after a restart.
    pub fn changes_needing_restart(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.kafka != new.kafka {
            changed.push("[kafka]");
        }
        if self.http != new.http {
            changed.push("[http]");
        }
        if self.input_format != new.input_format || self.topic_formats != new.topic_formats {
            changed.push("[format]");
        }
        if self.output_format != new.output_format {
            changed.push("[output_format]");
        }
        if self.status_format != new.status_format {
            changed.push("[status_format]");
        }
        if self.engine.late_events != new.engine.late_events {
            changed.push("engine.late_events");
        }
        if self.engine.future_events != new.engine.future_events {
            changed.push("engine.future_events");
        }
        changed
    }

    /// Loads the configuration from layers, lowest precedence first: the TOML
    /// `file` (if any), `DRIFTWATCH_<SECTION>__<KEY>` environment variables,
    /// then `overrides`: `(dotted.key, value)` pairs from CLI flags, where the
    /// value is a TOML literal or a bare string (e.g. `("kafka.group_id", "g1")`,
    /// `("engine.max_models_per_partition", "5")`).
    ///
    /// Only environment variables with a `__` after the prefix are read, so
    /// unrelated ones such as `DRIFTWATCH_LOG` are left alone.
    pub fn load(
        file: Option<&Path>,
        overrides: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            let key = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(key.clone(), format!("cannot read config file: {e}"))
            })?;
            check_toml_syntax(&key, &text)?;
            figment = figment.merge(Toml::string(&text));
        }
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        for (key, value) in overrides {
            if key.is_empty() || key.split('.').any(str::is_empty) {
                return Err(ConfigError::new(key.clone(), "not a valid dotted key"));
            }
            figment = figment.merge(Serialized::default(key, parse_override(value)));
        }
        Self::from_figment(&figment)
    }

    /// Loads the configuration from a TOML string alone (no environment, no
    /// overrides), for tests and the demo.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        check_toml_syntax("toml", toml)?;
        Self::from_figment(&Figment::from(Toml::string(toml)))
    }

    fn from_figment(figment: &Figment) -> Result<Config, ConfigError> {
        let raw: RawConfig = figment.extract().map_err(|e| figment_error(e, ""))?;
        raw.compile()
    }

    /// The format for records of `topic`: its per-topic override, or the
    /// default input format.
    pub fn format_for_topic(&self, topic: &str) -> &FormatConfig {
        self.topic_formats.get(topic).unwrap_or(&self.input_format)
    }

    /// Things that are valid but probably not intended, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let policies = self.policies.policies();
        if policies.is_empty() {
            warnings.push("no policies configured: driftwatch watches nothing".to_owned());
        } else if !policies.iter().any(is_catch_all) {
            warnings
                .push("no policy matches every model (add match = \"*\" for a default)".to_owned());
        }
        warnings
    }
}

/// Whether a policy's glob matches any `project/name` lineage.
fn is_catch_all(policy: &Policy) -> bool {
    policy.pattern.chars().all(|c| c == '*' || c == '/') && policy.matches("p/n")
}

/// Rejects malformed TOML with the parser's own message and position.
fn check_toml_syntax(source: &str, text: &str) -> Result<(), ConfigError> {
    let Err(e) = text.parse::<toml::Table>() else {
        return Ok(());
    };
    let message = e.message().trim().replace('\n', "; ");
    let problem = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
            format!("invalid TOML at line {line}, column {column}: {message}")
        }
        None => format!("invalid TOML: {message}"),
    };
    Err(ConfigError::new(source, problem))
}

/// Reads a CLI override value as a TOML literal, falling back to a bare string.
fn parse_override(raw: &str) -> toml::Value {
    let bare = || toml::Value::String(raw.to_owned());
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut table) => match table.remove("v") {
            // Datetimes serialize as private structs; keep them as text.
            Some(toml::Value::Datetime(_)) | None => bare(),
            Some(value) => value,
        },
        Err(_) => bare(),
    }
}

// ---------------------------------------------------------------------------
// Error mapping and key paths

/// Renders `prefix` followed by `path` as a dotted key: numeric segments are
/// indices (`[0]`), segments that are not bare TOML keys are quoted.
fn join_key(prefix: &str, path: &[String]) -> String {
    let mut key = prefix.to_owned();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{segment}]"));
        } else {
            key = child(&key, segment);
        }
    }
    key
}

/// `parent.name`, quoting `name` when it is not a bare TOML key.
fn child(parent: &str, name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let name = if bare {
        name.to_owned()
    } else {
        format!("{name:?}")
    };
    if parent.is_empty() {
        name
    } else {
        format!("{parent}.{name}")
    }
}

/// Maps a figment deserialization error to a [`ConfigError`] whose key is
/// `prefix` joined with the error's path.
fn figment_error(error: figment::Error, prefix: &str) -> ConfigError {
    let mut path = error.path.clone();
    let problem = match &error.kind {
        Kind::UnknownField(_, []) => "unknown key".to_owned(),
        Kind::UnknownField(_, expected) => {
            format!("unknown key (expected one of: {})", expected.join(", "))
        }
        Kind::MissingField(field) => {
            path.push(field.to_string());
            "required key is missing".to_owned()
        }
        Kind::DuplicateField(_) => "given more than once".to_owned(),
        Kind::UnknownVariant(actual, expected) => {
            // Upper-case aliases (e.g. FINE_TUNE) are accepted but not advertised.
            let shown: Vec<&str> = expected
                .iter()
                .copied()
                .filter(|name| {
                    *name == name.to_lowercase()
                        || !expected.contains(&name.to_lowercase().as_str())
                })
                .collect();
            format!("{actual:?} is not one of: {}", shown.join(", "))
        }
        Kind::InvalidType(actual, expected) => {
            format!("expected {}, found {actual}", describe_expected(expected))
        }
        Kind::InvalidValue(actual, expected) => {
            format!(
                "invalid value {actual}, expected {}",
                describe_expected(expected)
            )
        }
        Kind::InvalidLength(len, expected) => format!("{len} items, expected {expected}"),
        other => other.to_string(),
    };
    let key = join_key(prefix, &path);
    ConfigError::new(if key.is_empty() { "config" } else { &key }, problem)
}

/// Turns serde's type names into words.
fn describe_expected(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "an integer".to_owned(),
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a non-negative integer".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a map" => "a table".to_owned(),
        other if other.starts_with("struct ") => "a table".to_owned(),
        other => other.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Raw (as written) configuration

/// A string that also accepts numbers and booleans (environment variables and
/// CLI overrides such as `GROUP_ID=123` arrive typed).
#[derive(Debug, Clone, Default, PartialEq)]
struct Text(String);

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = Text;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_owned()))
            }

            fn visit_char<E: de::Error>(self, v: char) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

/// A list of topic names; a single string is split on commas (handy for
/// `DRIFTWATCH_KAFKA__INPUT_TOPICS=a,b`).
#[derive(Debug, Clone, PartialEq)]
struct TopicList(Vec<String>);

impl<'de> Deserialize<'de> for TopicList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = TopicList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of topic names")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TopicList, E> {
                Ok(TopicList(
                    v.split(',').map(|t| t.trim().to_owned()).collect(),
                ))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopicList, A::Error> {
                let mut topics = Vec::new();
                while let Some(Text(topic)) = seq.next_element()? {
                    topics.push(topic);
                }
                Ok(TopicList(topics))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    kafka: RawKafka,
    /// The default input format plus its `topics` table; split by hand since
    /// `FormatConfig` denies unknown fields (no `#[serde(flatten)]`).
    #[serde(default)]
    format: Dict,
    #[serde(default)]
    output_format: FormatConfig,
    #[serde(default)]
    status_format: FormatConfig,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    policy: Vec<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawKafka {
    bootstrap_servers: Text,
    group_id: Text,
    input_topics: Option<TopicList>,
    input_pattern: Option<Text>,
    output_topic: Text,
    status_topic: Option<Text>,
    dlq_topic: Text,
    create_topics: bool,
    topic_partitions: i64,
    topic_replication: i64,
    properties: BTreeMap<String, Text>,
    security: security::RawSecurity,
    processing: Text,
    commit_interval: Text,
    changelog_topic: Option<Text>,
    instance_id: Option<Text>,
}

impl Default for RawKafka {
    fn default() -> Self {
        RawKafka {
            bootstrap_servers: "localhost:9092".into(),
            group_id: "driftwatch".into(),
            input_topics: None,
            input_pattern: None,
            output_topic: "retrain-requests".into(),
            status_topic: None,
            dlq_topic: "driftwatch-dlq".into(),
            create_topics: false,
            topic_partitions: 6,
            topic_replication: 1,
            properties: BTreeMap::new(),
            security: security::RawSecurity::default(),
            processing: "exactly_once".into(),
            commit_interval: "100ms".into(),
            changelog_topic: None,
            instance_id: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    listen: Text,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen: "0.0.0.0:8080".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEngine {
    max_models_per_partition: i64,
    request_timeout: Text,
    failed_backoff: Text,
    allowed_lateness: Text,
    late_events: RawLatePolicy,
    max_clock_skew: Text,
    future_events: RawLatePolicy,
    idle_timeout: Text,
}

impl Default for RawEngine {
    fn default() -> Self {
        RawEngine {
            max_models_per_partition: 100_000,
            request_timeout: "6h".into(),
            failed_backoff: "30m".into(),
            allowed_lateness: "0s".into(),
            late_events: RawLatePolicy::DeadLetter,
            max_clock_skew: "1h".into(),
            future_events: RawLatePolicy::DeadLetter,
            idle_timeout: "7d".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawLatePolicy {
    DeadLetter,
    Drop,
}

impl From<RawLatePolicy> for LatePolicy {
    fn from(raw: RawLatePolicy) -> Self {
        match raw {
            RawLatePolicy::DeadLetter => LatePolicy::DeadLetter,
            RawLatePolicy::Drop => LatePolicy::Drop,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "match")]
    pattern: Text,
    request_timeout: Option<Text>,
    failed_backoff: Option<Text>,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    composite: Vec<RawComposite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComposite {
    name: Text,
    any: Option<Vec<Text>>,
    all: Option<Vec<Text>>,
    cooldown: Option<Text>,
    action: RawAction,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Text,
    metric: Option<Text>,
    window: Option<RawWindow>,
    detector: Dict,
    #[serde(default = "default_confirm")]
    confirm: i64,
    confirm_of: Option<i64>,
    recover_after: Option<i64>,
    cooldown: Option<Text>,
    action: RawAction,
}

fn default_confirm() -> i64 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    kind: WindowKind,
    size: Text,
    slide: Option<Text>,
    #[serde(default)]
    aggregate: RawAggregate,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WindowKind {
    Count,
    Tumbling,
    Sliding,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RawAggregate {
    #[default]
    Mean,
    P95,
    Max,
    Min,
    Sum,
    Count,
    Rate,
}

impl From<RawAggregate> for Aggregate {
    fn from(raw: RawAggregate) -> Self {
        match raw {
            RawAggregate::Mean => Aggregate::Mean,
            RawAggregate::P95 => Aggregate::P95,
            RawAggregate::Max => Aggregate::Max,
            RawAggregate::Min => Aggregate::Min,
            RawAggregate::Sum => Aggregate::Sum,
            RawAggregate::Count => Aggregate::Count,
            RawAggregate::Rate => Aggregate::Rate,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawAction {
    #[serde(alias = "FINE_TUNE")]
    FineTune,
    #[serde(alias = "FULL_RETRAIN")]
    FullRetrain,
    /// The rule only feeds composite rules.
    #[serde(alias = "NONE")]
    None,
}

impl From<RawAction> for Option<Action> {
    fn from(raw: RawAction) -> Self {
        match raw {
            RawAction::FineTune => Some(Action::FineTune),
            RawAction::FullRetrain => Some(Action::FullRetrain),
            RawAction::None => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Validation and compilation

fn non_empty(key: &str, value: &Text) -> Result<String, ConfigError> {
    let trimmed = value.0.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::new(key, "must not be empty"));
    }
    Ok(trimmed.to_owned())
}

/// Parses a humantime duration into milliseconds.
fn duration_ms(key: &str, value: &Text) -> Result<i64, ConfigError> {
    let text = value.0.trim();
    let duration = humantime::parse_duration(text)
        .map_err(|e| ConfigError::new(key, format!("invalid duration {text:?}: {e}")))?;
    i64::try_from(duration.as_millis())
        .map_err(|_| ConfigError::new(key, format!("duration {text:?} is too large")))
}

/// Parses a duration that must be at least one millisecond.
fn positive_duration_ms(key: &str, value: &Text) -> Result<i64, ConfigError> {
    let ms = duration_ms(key, value)?;
    if ms < 1 {
        return Err(ConfigError::new(
            key,
            format!("must be at least 1ms, got {:?}", value.0.trim()),
        ));
    }
    Ok(ms)
}

fn in_range<T: TryFrom<i64>>(key: &str, value: i64, min: i64) -> Result<T, ConfigError> {
    if value < min {
        return Err(ConfigError::new(
            key,
            format!("must be >= {min}, got {value}"),
        ));
    }
    T::try_from(value).map_err(|_| ConfigError::new(key, format!("{value} is too large")))
}

/// Prefixes the key of a [`FormatConfig`] check failure with its table.
fn format_error(prefix: &str, checked: Result<(), (String, String)>) -> Result<(), ConfigError> {
    checked.map_err(|(key, problem)| {
        let key = if key.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{key}")
        };
        ConfigError::new(key, problem)
    })
}

impl RawConfig {
    fn compile(self) -> Result<Config, ConfigError> {
        let (kafka, input_regex) = self.kafka.compile()?;
        let (input_format, topic_formats) = compile_input_formats(self.format)?;
        for topic in topic_formats.keys() {
            let key = child("format.topics", topic);
            match (&kafka.input, &input_regex) {
                (InputTopics::List(topics), _) if !topics.contains(topic) => {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "{topic:?} is not one of kafka.input_topics \
                             (per-topic formats for other topics need kafka.input_pattern)"
                        ),
                    ));
                }
                (InputTopics::Pattern(pattern), Some(regex)) if !regex.is_match(topic) => {
                    return Err(ConfigError::new(
                        key,
                        format!("{topic:?} does not match kafka.input_pattern {pattern:?}"),
                    ));
                }
                _ => {}
            }
        }
        format_error("output_format", self.output_format.check_encoder())?;
        format_error("status_format", self.status_format.check())?;

        let listen = non_empty("http.listen", &self.http.listen)?;
        let listen = listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                "http.listen",
                format!("{listen:?} is not a socket address (ip:port, e.g. 0.0.0.0:8080)"),
            )
        })?;

        let engine = EngineConfig {
            max_models_per_partition: in_range(
                "engine.max_models_per_partition",
                self.engine.max_models_per_partition,
                1,
            )?,
            request_timeout_ms: positive_duration_ms(
                "engine.request_timeout",
                &self.engine.request_timeout,
            )?,
            failed_backoff_ms: duration_ms("engine.failed_backoff", &self.engine.failed_backoff)?,
            allowed_lateness_ms: duration_ms(
                "engine.allowed_lateness",
                &self.engine.allowed_lateness,
            )?,
            late_events: self.engine.late_events.into(),
            max_clock_skew_ms: duration_ms("engine.max_clock_skew", &self.engine.max_clock_skew)?,
            future_events: self.engine.future_events.into(),
            idle_timeout_ms: duration_ms("engine.idle_timeout", &self.engine.idle_timeout)?,
        };
        if engine.idle_timeout_ms > 0 && engine.idle_timeout_ms <= engine.allowed_lateness_ms {
            return Err(ConfigError::new(
                "engine.idle_timeout",
                "must be longer than engine.allowed_lateness (or 0s: never expire)",
            ));
        }

        let mut policies = Vec::with_capacity(self.policy.len());
        let mut patterns: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in self.policy.into_iter().enumerate() {
            let policy = raw.compile(&format!("policy[{i}]"), &engine)?;
            if let Some(first) = patterns.insert(policy.pattern.to_string(), i) {
                return Err(ConfigError::new(
                    format!("policy[{i}].match"),
                    format!(
                        "duplicate policy match {:?} (also policy[{first}])",
                        policy.pattern
                    ),
                ));
            }
            policies.push(policy);
        }

        Ok(Config {
            kafka,
            input_format,
            topic_formats,
            output_format: self.output_format,
            status_format: self.status_format,
            http: HttpConfig { listen },
            engine,
            policies: PolicySet::new(policies),
        })
    }
}

/// Splits `[format]` into the default format and its `topics` overrides.
fn compile_input_formats(
    mut table: Dict,
) -> Result<(FormatConfig, BTreeMap<String, FormatConfig>), ConfigError> {
    let topics = table.remove("topics");
    let default: FormatConfig = Value::Dict(Tag::Default, table)
        .deserialize()
        .map_err(|e| figment_error(e, "format"))?;
    format_error("format", default.check())?;
    let topics: BTreeMap<String, FormatConfig> = match topics {
        Some(value) => value
            .deserialize()
            .map_err(|e| figment_error(e, "format.topics"))?,
        None => BTreeMap::new(),
    };
    for (topic, format) in &topics {
        format_error(&child("format.topics", topic), format.check())?;
    }
    Ok((default, topics))
}

impl RawKafka {
    fn compile(self) -> Result<(KafkaConfig, Option<Regex>), ConfigError> {
        let bootstrap_servers = non_empty("kafka.bootstrap_servers", &self.bootstrap_servers)?;
        let group_id = non_empty("kafka.group_id", &self.group_id)?;
        let output_topic = non_empty("kafka.output_topic", &self.output_topic)?;
        let dlq_topic = non_empty("kafka.dlq_topic", &self.dlq_topic)?;
        let status_topic = self
            .status_topic
            .as_ref()
            .map(|t| non_empty("kafka.status_topic", t))
            .transpose()?;

        let exactly_one = "set exactly one of kafka.input_topics or kafka.input_pattern";
        let (input, regex) = match (self.input_topics, self.input_pattern) {
            (Some(TopicList(list)), None) => (InputTopics::List(input_list(list)?), None),
            (None, Some(pattern)) => {
                let (pattern, regex) = input_pattern(&pattern)?;
                (InputTopics::Pattern(pattern), Some(regex))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "kafka.input_topics",
                    format!("{exactly_one} (both are set)"),
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "kafka.input_topics",
                    format!("{exactly_one} (neither is set)"),
                ))
            }
        };

        let consumed = |topic: &str| match (&input, &regex) {
            (InputTopics::List(topics), _) => topics.iter().any(|t| t == topic),
            (_, Some(regex)) => regex.is_match(topic),
            _ => false,
        };
        let mut own = vec![
            ("kafka.output_topic", &output_topic),
            ("kafka.dlq_topic", &dlq_topic),
        ];
        if let Some(status) = &status_topic {
            own.push(("kafka.status_topic", status));
        }
        for (n, (key, topic)) in own.iter().enumerate() {
            if consumed(topic) {
                return Err(ConfigError::new(
                    *key,
                    format!(
                        "{topic:?} is also an input topic; driftwatch would consume its own records"
                    ),
                ));
            }
            if let Some((other, _)) = own[..n].iter().find(|(_, t)| t == topic) {
                return Err(ConfigError::new(
                    *key,
                    format!("{topic:?} is already used as {other}; use a separate topic"),
                ));
            }
        }

        let security = self.security.compile()?;
        let mut properties = BTreeMap::new();
        let mut secret_properties = BTreeMap::new();
        for (name, Text(value)) in self.properties {
            let key = child("kafka.properties", &name);
            let replacement = match name.trim() {
                "" => return Err(ConfigError::new(key, "property name must not be empty")),
                "bootstrap.servers" => Some("kafka.bootstrap_servers"),
                "group.id" => Some("kafka.group_id"),
                _ => None,
            };
            if let Some(replacement) = replacement {
                return Err(ConfigError::new(key, format!("set {replacement} instead")));
            }
            if is_secret_property(&name) {
                secret_properties.insert(name, Secret::new(value));
            } else {
                properties.insert(name, value);
            }
        }

        let processing = match self.processing.0.trim() {
            "exactly_once" => Processing::ExactlyOnce,
            "at_least_once" => Processing::AtLeastOnce,
            other => {
                return Err(ConfigError::new(
                    "kafka.processing",
                    format!("{other:?} is not one of: exactly_once, at_least_once"),
                ))
            }
        };
        let commit_interval_ms =
            positive_duration_ms("kafka.commit_interval", &self.commit_interval)? as u64;
        let changelog_topic = match &self.changelog_topic {
            Some(topic) => non_empty("kafka.changelog_topic", topic)?,
            None => format!("{group_id}-changelog"),
        };
        if consumed(&changelog_topic) || own.iter().any(|(_, t)| **t == changelog_topic) {
            return Err(ConfigError::new(
                "kafka.changelog_topic",
                format!("{changelog_topic:?} is already used as an input or output topic"),
            ));
        }
        let instance_id = match &self.instance_id {
            Some(id) => non_empty("kafka.instance_id", id)?,
            None => default_instance_id(),
        };
        let kafka = KafkaConfig {
            processing,
            commit_interval_ms,
            changelog_topic,
            instance_id,
            bootstrap_servers,
            group_id,
            input,
            output_topic,
            status_topic,
            dlq_topic,
            create_topics: self.create_topics,
            topic_partitions: in_range("kafka.topic_partitions", self.topic_partitions, 1)?,
            topic_replication: in_range("kafka.topic_replication", self.topic_replication, 1)?,
            properties,
            secret_properties,
            security,
        };
        Ok((kafka, regex))
    }
}

/// The host name (stable for a pod of a StatefulSet), else "driftwatch".
fn default_instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "driftwatch".to_owned())
}

fn input_list(list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::new(
            "kafka.input_topics",
            "must list at least one topic",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut topics = Vec::with_capacity(list.len());
    for (i, topic) in list.into_iter().enumerate() {
        let key = format!("kafka.input_topics[{i}]");
        let topic = non_empty(&key, &Text(topic))?;
        if !seen.insert(topic.clone()) {
            return Err(ConfigError::new(key, format!("duplicate topic {topic:?}")));
        }
        topics.push(topic);
    }
    Ok(topics)
}

fn input_pattern(pattern: &Text) -> Result<(String, Regex), ConfigError> {
    const KEY: &str = "kafka.input_pattern";
    let pattern = non_empty(KEY, pattern)?;
    if !pattern.starts_with('^') {
        return Err(ConfigError::new(
            KEY,
            format!(
                "{pattern:?} must start with ^ (librdkafka only treats such names as patterns)"
            ),
        ));
    }
    let regex = Regex::new(&pattern).map_err(|e| {
        // The parser's message spans lines (pattern, caret, error); keep the error.
        let message = e.to_string();
        let last = message.lines().last().unwrap_or_default().trim();
        let last = last.strip_prefix("error: ").unwrap_or(last);
        ConfigError::new(KEY, format!("not a valid regular expression: {last}"))
    })?;
    Ok((pattern, regex))
}

impl RawPolicy {
    fn compile(self, key: &str, defaults: &EngineConfig) -> Result<Policy, ConfigError> {
        let match_key = format!("{key}.match");
        let pattern = non_empty(&match_key, &self.pattern)?;
        let request_timeout_ms = match &self.request_timeout {
            Some(timeout) => positive_duration_ms(&format!("{key}.request_timeout"), timeout)?,
            None => defaults.request_timeout_ms,
        };
        let failed_backoff_ms = match &self.failed_backoff {
            Some(backoff) => duration_ms(&format!("{key}.failed_backoff"), backoff)?,
            None => defaults.failed_backoff_ms,
        };
        if self.rule.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.rule"),
                "a policy needs at least one [[policy.rule]]",
            ));
        }
        let mut names = BTreeSet::new();
        let mut rules = Vec::with_capacity(self.rule.len());
        let mut silences = Vec::new();
        for (j, raw) in self.rule.into_iter().enumerate() {
            let rule_key = format!("{key}.rule[{j}]");
            let name = if raw.is_silence() {
                let silence = raw.compile_silence(&rule_key, defaults)?;
                let name = silence.name.clone();
                silences.push(silence);
                name
            } else {
                let rule = raw.compile(&rule_key)?;
                let name = rule.name.clone();
                rules.push(rule);
                name
            };
            if !names.insert(name.clone()) {
                return Err(ConfigError::new(
                    format!("{rule_key}.name"),
                    format!("duplicate rule name {name:?} in this policy"),
                ));
            }
        }
        let mut composites = Vec::with_capacity(self.composite.len());
        for (j, raw) in self.composite.into_iter().enumerate() {
            let composite_key = format!("{key}.composite[{j}]");
            let composite = raw.compile(&composite_key, &rules)?;
            if !names.insert(composite.name.clone()) {
                return Err(ConfigError::new(
                    format!("{composite_key}.name"),
                    format!(
                        "duplicate rule name {:?} in this policy (rules and composites share names)",
                        composite.name
                    ),
                ));
            }
            composites.push(composite);
        }
        Policy::new(&pattern, rules, request_timeout_ms)
            .map(|p| {
                p.with_failed_backoff(failed_backoff_ms)
                    .with_composites(composites)
                    .with_silences(silences)
            })
            .map_err(|e| ConfigError::new(match_key, format!("not a valid glob: {e}")))
    }
}

impl RawRule {
    /// A rule with `detector = { kind = "silence", after = "..." }`.
    fn is_silence(&self) -> bool {
        matches!(self.detector.get("kind"), Some(Value::String(_, kind)) if kind == "silence")
    }

    /// A silence rule: judged by the watermark on the model's last event,
    /// so it has no metric, window or confirmation.
    fn compile_silence(
        self,
        key: &str,
        defaults: &EngineConfig,
    ) -> Result<SilenceSpec, ConfigError> {
        let name = non_empty(&format!("{key}.name"), &self.name)?;
        let not_for_silence = |field: &str| {
            ConfigError::new(
                format!("{key}.{field}"),
                "a silence rule judges the absence of events: it takes no metric, window or confirmation",
            )
        };
        if self.metric.is_some() {
            return Err(not_for_silence("metric"));
        }
        if self.window.is_some() {
            return Err(not_for_silence("window"));
        }
        if self.confirm != 1 || self.confirm_of.is_some() {
            return Err(not_for_silence("confirm"));
        }
        if self.recover_after.is_some() {
            return Err(not_for_silence("recover_after"));
        }
        let detector_key = format!("{key}.detector");
        let mut after = None;
        for (field, value) in &self.detector {
            match (field.as_str(), value) {
                ("kind", _) => {}
                ("after", Value::String(_, text)) => after = Some(Text(text.clone())),
                ("after", _) => {
                    return Err(ConfigError::new(
                        format!("{detector_key}.after"),
                        "must be a duration such as \"30m\"",
                    ))
                }
                (other, _) => {
                    return Err(ConfigError::new(
                        format!("{detector_key}.{other}"),
                        "unknown key for a silence rule (it takes after)",
                    ))
                }
            }
        }
        let after_key = format!("{detector_key}.after");
        let Some(after) = after else {
            return Err(ConfigError::new(
                after_key,
                "required: how long without an event before the model counts as silent",
            ));
        };
        let after_ms = positive_duration_ms(&after_key, &after)?;
        if after_ms <= defaults.allowed_lateness_ms {
            return Err(ConfigError::new(
                after_key,
                format!(
                    "must be longer than engine.allowed_lateness ({} ms): events may still arrive that late",
                    defaults.allowed_lateness_ms
                ),
            ));
        }
        if defaults.idle_timeout_ms > 0 && after_ms >= defaults.idle_timeout_ms {
            return Err(ConfigError::new(
                after_key,
                format!(
                    "must be shorter than engine.idle_timeout ({} ms): a model expires before it could be judged silent",
                    defaults.idle_timeout_ms
                ),
            ));
        }
        let cooldown_ms = match &self.cooldown {
            Some(cooldown) => duration_ms(&format!("{key}.cooldown"), cooldown)?,
            None => 0,
        };
        Ok(SilenceSpec {
            name,
            after_ms,
            cooldown_ms,
            action: self.action.into(),
        })
    }

    fn compile(self, key: &str) -> Result<RuleSpec, ConfigError> {
        let name = non_empty(&format!("{key}.name"), &self.name)?;
        let metric_key = format!("{key}.metric");
        let metric = self.metric.as_ref().ok_or_else(|| {
            ConfigError::new(
                &metric_key,
                "required key is missing (the metric the rule watches)",
            )
        })?;
        let metric = non_empty(&metric_key, metric)?;
        let window_key = format!("{key}.window");
        let raw_window = self.window.as_ref().ok_or_else(|| {
            ConfigError::new(
                &window_key,
                "required key is missing (count, tumbling or sliding)",
            )
        })?;
        let window = raw_window.compile(&window_key)?;
        let aggregate = raw_window.aggregate;
        let detector = detector::compile(&format!("{key}.detector"), self.detector)?;
        let confirm: u32 = in_range(&format!("{key}.confirm"), self.confirm, 1)?;
        let of_key = format!("{key}.confirm_of");
        let of: u32 = match self.confirm_of {
            Some(of) => in_range(&of_key, of, 1)?,
            None => confirm,
        };
        if of < confirm {
            return Err(ConfigError::new(
                of_key,
                format!("confirm_of ({of}) must be at least confirm ({confirm})"),
            ));
        }
        if of > MAX_CONFIRM_WINDOWS {
            let which = if self.confirm_of.is_some() {
                of_key
            } else {
                format!("{key}.confirm")
            };
            return Err(ConfigError::new(
                which,
                format!("at most {MAX_CONFIRM_WINDOWS} windows, got {of}"),
            ));
        }
        let recover_after = match self.recover_after {
            Some(n) => Some(in_range(&format!("{key}.recover_after"), n, 1)?),
            None => None,
        };
        let cooldown_ms = match &self.cooldown {
            Some(cooldown) => duration_ms(&format!("{key}.cooldown"), cooldown)?,
            None => 0,
        };
        Ok(RuleSpec {
            name,
            metric,
            window,
            aggregate: aggregate.into(),
            detector,
            alert: AlertSpec {
                confirm,
                of,
                recover_after,
                cooldown_ms,
            },
            action: self.action.into(),
        })
    }
}

impl RawComposite {
    fn compile(self, key: &str, rules: &[RuleSpec]) -> Result<CompositeSpec, ConfigError> {
        let name = non_empty(&format!("{key}.name"), &self.name)?;
        let (combine, listed, list_key) = match (self.any, self.all) {
            (Some(any), None) => (Combine::Any, any, format!("{key}.any")),
            (None, Some(all)) => (Combine::All, all, format!("{key}.all")),
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    format!("{key}.all"),
                    "give any or all, not both",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    key,
                    "a composite rule needs any = [...] or all = [...] (rule names)",
                ))
            }
        };
        if listed.is_empty() {
            return Err(ConfigError::new(list_key, "must name at least one rule"));
        }
        let mut members = Vec::with_capacity(listed.len());
        for (i, member) in listed.iter().enumerate() {
            let wanted = member.0.trim();
            let index = rules.iter().position(|r| r.name == wanted).ok_or_else(|| {
                ConfigError::new(
                    format!("{list_key}[{i}]"),
                    format!("{wanted:?} is not a rule of this policy"),
                )
            })?;
            if members.contains(&index) {
                return Err(ConfigError::new(
                    format!("{list_key}[{i}]"),
                    format!("{wanted:?} is listed twice"),
                ));
            }
            members.push(index);
        }
        let cooldown_ms = match &self.cooldown {
            Some(cooldown) => duration_ms(&format!("{key}.cooldown"), cooldown)?,
            None => 0,
        };
        let action = Option::<Action>::from(self.action).ok_or_else(|| {
            ConfigError::new(
                format!("{key}.action"),
                "a composite rule must ask for fine_tune or full_retrain",
            )
        })?;
        Ok(CompositeSpec {
            name,
            combine,
            members,
            cooldown_ms,
            action,
        })
    }
}

impl RawWindow {
    fn compile(&self, key: &str) -> Result<WindowSpec, ConfigError> {
        let size_key = format!("{key}.size");
        let slide_key = format!("{key}.slide");
        let no_slide = || match self.slide {
            Some(_) => Err(ConfigError::new(
                slide_key.as_str(),
                "only sliding windows take a slide",
            )),
            None => Ok(()),
        };
        match self.kind {
            WindowKind::Count => {
                no_slide()?;
                let text = self.size.0.trim();
                let size: i64 = text.parse().map_err(|_| {
                    ConfigError::new(
                        size_key.as_str(),
                        format!("a count window's size is a whole number of samples, got {text:?}"),
                    )
                })?;
                Ok(WindowSpec::Count {
                    size: in_range(&size_key, size, 1)?,
                })
            }
            WindowKind::Tumbling => {
                no_slide()?;
                Ok(WindowSpec::Tumbling {
                    size_ms: positive_duration_ms(&size_key, &self.size)?,
                })
            }
            WindowKind::Sliding => {
                let size_ms = positive_duration_ms(&size_key, &self.size)?;
                let slide = self.slide.as_ref().ok_or_else(|| {
                    ConfigError::new(slide_key.as_str(), "required for sliding windows")
                })?;
                let slide_ms = positive_duration_ms(&slide_key, slide)?;
                let (size_text, slide_text) = (self.size.0.trim(), slide.0.trim());
                if slide_ms >= size_ms {
                    return Err(ConfigError::new(
                        slide_key,
                        format!("slide ({slide_text}) must be less than size ({size_text})"),
                    ));
                }
                if size_ms % slide_ms != 0 {
                    return Err(ConfigError::new(
                        size_key,
                        format!("size ({size_text}) must be a multiple of slide ({slide_text})"),
                    ));
                }
                Ok(WindowSpec::Sliding { size_ms, slide_ms })
            }
        }
    }
}
